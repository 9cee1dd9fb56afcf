"""Other accounts: the registry policy, the pull policy on every repository of the mirror, nothing open to `*`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ecr_mirror_cdk.config import ConfigError
from ecr_mirror_cdk.config_parse import parse_config
from stacks.mirror_stack import NO_STACK_SET

from .conftest import ACCOUNTS, ORG, ROOT, SHARED, Synthesized, synthesize

PULL = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
FILL = ["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"]
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "999988887777"}


def plain(value: Any) -> Any:
    """A template value with pseudo parameters filled in, as CloudFormation would deploy it in us-east-1."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in PSEUDO:
        return PSEUDO[value["Ref"]]
    if isinstance(value, dict) and set(value) == {"Fn::Join"}:
        separator, parts = value["Fn::Join"]
        return separator.join(part if isinstance(part, str) else json.dumps(part) for part in map(plain, parts))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def roots(accounts: list[str]) -> list[str]:
    return [f"arn:aws:iam::{account}:root" for account in accounts]


def pull_policy(accounts: list[str], org: str | None) -> dict[str, Any]:
    statements: list[dict[str, Any]] = []
    if accounts:
        principal = roots(accounts) if len(accounts) > 1 else roots(accounts)[0]
        statements.append({"Action": PULL, "Effect": "Allow", "Principal": {"AWS": principal},
                           "Sid": "MirrorPullFromAccounts"})
    if org:
        statements.append({"Action": PULL, "Condition": {"StringEquals": {"aws:PrincipalOrgID": org}},
                           "Effect": "Allow", "Principal": {"AWS": "*"}, "Sid": "MirrorPullFromOrganization"})
    return {"Statement": statements, "Version": "2012-10-17"}


def resources(data: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in data["Resources"].values() if r["Type"] == kind]


def test_the_registry_policy_lets_the_accounts_and_the_organization_fill_the_cache_prefixes_only(
    shared_app: Synthesized,
) -> None:
    [policy] = resources(shared_app.data, "AWS::ECR::RegistryPolicy")
    prefixes = [f"arn:aws:ecr:us-east-1:999988887777:repository/{p}/*" for p in ("docker-hub", "quay")]

    assert plain(policy["PolicyText"]) == {
        "Statement": [
            {"Action": FILL, "Effect": "Allow", "Principal": {"AWS": roots(ACCOUNTS)}, "Resource": prefixes,
             "Sid": "MirrorCacheFillFromAccounts"},
            {"Action": FILL, "Condition": {"StringEquals": {"aws:PrincipalOrgID": ORG}}, "Effect": "Allow",
             "Principal": {"AWS": "*"}, "Resource": prefixes, "Sid": "MirrorCacheFillFromOrganization"},
        ],
        "Version": "2012-10-17",
    }


def test_repositories_the_cache_or_the_copier_creates_get_the_pull_policy_from_their_creation_template(
    shared_app: Synthesized,
) -> None:
    templates = resources(shared_app.data, "AWS::ECR::RepositoryCreationTemplate")

    assert sorted((t["Prefix"], t["AppliedFor"]) for t in templates) == [
        ("docker-hub", ["PULL_THROUGH_CACHE"]), ("mirror", ["CREATE_ON_PUSH"]), ("quay", ["PULL_THROUGH_CACHE"])]
    for template in templates:
        assert json.loads(plain(template["RepositoryPolicy"])) == pull_policy(ACCOUNTS, ORG)


@pytest.mark.parametrize(("sharing", "accounts", "org"), [
    ({"accounts": ["111122223333"]}, ["111122223333"], None),
    ({"organization_id": ORG, "stack_set": {"targets": [ROOT]}}, [], ORG),
])
def test_accounts_alone_or_an_organization_alone_get_only_their_statement(
    sharing: dict[str, Any], accounts: list[str], org: str | None, tmp_path: Path,
) -> None:
    app = synthesize(parse_config({**SHARED, "sharing": sharing, "replication": None}), tmp_path)

    [template, *_] = resources(app.data, "AWS::ECR::RepositoryCreationTemplate")
    assert json.loads(plain(template["RepositoryPolicy"])) == pull_policy(accounts, org)
    [policy] = resources(app.data, "AWS::ECR::RegistryPolicy")
    assert [s["Sid"] for s in policy["PolicyText"]["Statement"]] == (
        ["MirrorCacheFillFromAccounts"] if accounts else ["MirrorCacheFillFromOrganization"])


def test_an_organization_without_a_stackset_may_pull_and_synth_warns_once_that_accounts_take_the_outputs(
    tmp_path: Path,
) -> None:
    config = parse_config({**SHARED, "sharing": {"organization_id": ORG}, "replication": None}, origin="org.yaml")

    app = synthesize(config, tmp_path)

    assert not [r for r in app.data["Resources"].values() if r["Type"] == "AWS::CloudFormation::StackSet"]
    metadata = json.loads((tmp_path / "EcrMirror.metadata.json").read_text())
    warnings = [(path, entry["data"]) for path, entries in metadata.items() for entry in entries
                if entry["type"] == "aws:cdk:warning" and NO_STACK_SET in entry["data"]]
    assert warnings == [("/EcrMirror", f"org.yaml: sharing: the organization {ORG} may pull, but without "
                                       "sharing.stack_set its accounts get no contract: give their projects the "
                                       "outputs RegistryUri and MirrorMap (MirrorAdoption(registry_uri=..., "
                                       f"mirror_map=...)) [ack: {NO_STACK_SET}]")]
    # The organization's grants are all there: cache fill, and the pull on every repository ECR creates, the
    # direct copies' (created on the copier's first push) included.
    [policy] = resources(app.data, "AWS::ECR::RegistryPolicy")
    assert [s["Sid"] for s in policy["PolicyText"]["Statement"]] == ["MirrorCacheFillFromOrganization"]
    templates = resources(app.data, "AWS::ECR::RepositoryCreationTemplate")
    assert ("mirror", ["CREATE_ON_PUSH"]) in [(t["Prefix"], t["AppliedFor"]) for t in templates]
    for template in templates:
        assert json.loads(plain(template["RepositoryPolicy"])) == pull_policy([], ORG)
    assert {"RegistryUri", "MirrorMap"} <= set(app.data["Outputs"])


def test_with_a_stackset_or_without_an_organization_synth_gives_no_such_warning(
    shared_app: Synthesized, default_app: Synthesized,
) -> None:
    for app in (shared_app, default_app):
        assert NO_STACK_SET not in (app.outdir / "EcrMirror.metadata.json").read_text()


def test_no_policy_in_any_template_allows_everyone_without_the_organization_condition(
    shared_app: Synthesized,
) -> None:
    found = 0
    for path in shared_app.outdir.glob("*.template.json"):
        for statement in policy_statements(json.loads(path.read_text())):
            if statement["Effect"] == "Allow" and "*" in json.dumps(statement.get("Principal", "")):
                found += 1
                assert statement["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": ORG}}, path.name
    assert found >= 4  # registry policy and three creation templates at home, and the replicas' templates


def policy_statements(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of every resource policy in a template, creation templates' JSON text included."""
    found: list[dict[str, Any]] = []
    for resource in data["Resources"].values():
        properties = resource.get("Properties", {})
        for key in ("PolicyText", "RepositoryPolicyText", "RepositoryPolicy", "PolicyDocument"):
            if key in properties:
                document = plain(properties[key])
                found += (json.loads(document) if isinstance(document, str) else document)["Statement"]
    return found


def test_without_sharing_there_is_no_registry_policy_and_no_repository_policy(default_app: Synthesized) -> None:
    assert resources(default_app.data, "AWS::ECR::RegistryPolicy") == []
    assert all("RepositoryPolicy" not in t for t in resources(default_app.data, "AWS::ECR::RepositoryCreationTemplate"))
    assert all("RepositoryPolicyText" not in r for r in resources(default_app.data, "AWS::ECR::Repository"))
    assert resources(default_app.data, "AWS::ECR::RepositoryCreationTemplate")  # which do exist


def test_cdk_nag_acknowledges_the_organization_statement_where_it_is_and_nowhere_else(
    shared_app: Synthesized,
) -> None:
    report = json.loads((shared_app.outdir / "validation-report.json").read_text())
    assert [r for r in report["pluginReports"] if r["conclusion"] != "success"] == []
    metadata = json.loads((shared_app.outdir / "EcrMirror.metadata.json").read_text())
    acknowledged = sorted(path for path, entries in metadata.items() for entry in entries
                          if entry["type"] == "aws:cdk:acknowledged-rules"
                          and any(finding.endswith("AwsSolutions-ECR1") for finding in entry["data"]))
    assert acknowledged == ["/EcrMirror/Registry/Policy"]


def test_too_many_accounts_for_ecrs_policy_limit_fail_synth_with_one_line(tmp_path: Path) -> None:
    accounts = [f"{n:012d}" for n in range(1, 301)]
    config = parse_config({**SHARED, "sharing": {"accounts": accounts}, "replication": None}, origin="big.yaml")

    with pytest.raises(ConfigError) as caught:
        synthesize(config, tmp_path)

    assert str(caught.value).startswith("big.yaml: sharing.accounts: the policies would reach ")
    assert str(caught.value).endswith("over ECR's 10240; share with the organization (sharing.organization_id) instead")
