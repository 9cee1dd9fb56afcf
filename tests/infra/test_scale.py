"""Mirrors of 150 and 600 images deploy within ECR's, IAM's, SSM's and CloudFormation's limits (no stack resource
per image: ECR creates each repository on the copier's first push); one that cannot fit stops synth with one line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import CfnResource, Stack
from aws_cdk.assertions import Capture, Match
from cfnlint.api import ManualArgs, lint_file

from app import build
from ecr_mirror_cdk.config import ConfigError
from ecr_mirror_cdk.config_parse import parse_config
from stacks.limits import MAX_RESOURCES, check_counts, counts
from tests.support.cdk import cdk_app
from tests.support.models import shapes

from .conftest import Synthesized, synthesize
from .test_config import run_app
from .test_sharing import plain, pull_policy

# What a token becomes at deploy time, at its longest (a 12-digit account, the longest region name).
LONGEST = {"AWS::Partition": "aws-us-gov", "AWS::Region": "ap-southeast-5", "AWS::AccountId": "123456789012",
           "AWS::URLSuffix": "amazonaws.com.cn"}
IAM_ROLE_POLICIES_MAX = 10_240  # IAM: "Role policy size cannot exceed 10,240 characters" (IAM quotas), whitespace aside
SSM_ADVANCED_MAX = 8_192


def deployed(value: Any, resources: dict[str, Any]) -> str:
    """A template value as text once deployed, tokens at their longest (a logical id stands in for a name)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return LONGEST.get(value["Ref"], "x" * 64)
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "arn:aws-us-gov:ecr:ap-southeast-5:123456789012:repository/" + "x" * 64
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(deployed(part, resources) for part in parts)
    if isinstance(value, dict) and "Fn::Sub" in value:
        return re.sub(r"\$\{([^}]+)\}", lambda m: LONGEST.get(m.group(1), "x" * 64), value["Fn::Sub"])
    if isinstance(value, list):
        return "[" + ",".join(json.dumps(deployed(v, resources)) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{deployed(v, resources)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@pytest.fixture(scope="module")
def big_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    images = [{"source": f"team{n % 7}/app-{n}", "tags": ["1.0", "latest"]} for n in range(140)]
    images += [{"source": f"gcr.io/project/tool-{n}", "tags": ["v1"]} for n in range(5)]
    images += [{"source": f"ghcr.io/org/svc-{n}", "tags": ["main"], "target": f"services/svc-{n}"} for n in range(5)]
    config = parse_config({"images": images, "replication": {"regions": ["eu-west-1"]}}, origin="big.yaml")
    return synthesize(config, tmp_path_factory.mktemp("big.out"))


def test_150_images_synthesize_and_pass_cfn_lint(big_app: Synthesized) -> None:
    assert len(big_app.config.images) == 150
    for template in sorted(big_app.outdir.glob("*.template.json")):
        matches = lint_file(template, ManualArgs(regions=["us-east-1"]))
        assert [f"{m.rule.id} {m.path_string}: {m.message}" for m in matches if m.rule.id.startswith("E")] == []


def test_150_images_fit_ecrs_scanning_filters_by_botocores_model(big_app: Synthesized) -> None:
    ecr = shapes("ecr")
    [scanning] = [r["Properties"] for r in big_app.data["Resources"].values()
                  if r["Type"] == "AWS::ECR::RegistryScanningConfiguration"]
    filters = scanning["Rules"][0]["RepositoryFilters"]
    pattern = ecr["ScanningRepositoryFilterValue"]["pattern"]
    assert len(filters) <= ecr["ScanningRepositoryFilterList"]["max"]
    literal = [f["Filter"] for f in filters if isinstance(f["Filter"], str)]
    assert all(re.fullmatch(pattern, name) for name in literal), literal
    assert "mirror/*" in literal and "services/svc-0" in literal


def test_150_images_keep_every_role_policy_and_ssm_parameter_within_their_limits(big_app: Synthesized) -> None:
    resources = big_app.data["Resources"]
    per_role: dict[str, int] = {}
    for resource in resources.values():
        if resource["Type"] == "AWS::IAM::Policy":
            size = len(deployed(resource["Properties"]["PolicyDocument"], resources))
            for role in resource["Properties"].get("Roles", []):
                per_role[json.dumps(role)] = per_role.get(json.dumps(role), 0) + size
    assert per_role and max(per_role.values()) <= IAM_ROLE_POLICIES_MAX, per_role
    for resource in resources.values():
        if resource["Type"] == "AWS::SSM::Parameter":
            value = deployed(resource["Properties"]["Value"], resources)
            limit = SSM_ADVANCED_MAX if resource["Properties"].get("Tier") == "Advanced" else 4_096
            assert len(value.encode()) <= limit, resource["Properties"]["Name"]


def test_targets_that_cannot_share_scanning_filters_stop_synth_with_one_line(tmp_path: Path) -> None:
    images = [{"source": f"org{n}/app", "tags": ["1"], "target": f"team{n}/app"} for n in range(120)]

    with pytest.raises(ConfigError) as raised:
        synthesize(parse_config({"images": images}, origin="many.yaml"), tmp_path)

    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith("many.yaml: images: 120 targets outside repositories.prefix 'mirror' need")


# --- 600 images: the config the per-image repositories could not deploy (670 resources) ------------------------

ACCOUNTS = ["111122223333", "444455556666"]


def six_hundred() -> dict[str, Any]:
    images = [{"source": f"team{n % 7}/app-{n}", "tags": ["1.0", "latest"]} for n in range(580)]
    images += [{"source": f"gcr.io/project/tool-{n}", "tags": ["v1"]} for n in range(10)]
    images += [{"source": f"ghcr.io/org/svc-{n}", "tags": ["main"], "target": f"services/svc-{n}"} for n in range(10)]
    return {"images": images, "replication": {"regions": ["eu-west-1"]}, "sharing": {"accounts": ACCOUNTS}}


@pytest.fixture(scope="module")
def huge_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(parse_config(six_hundred(), origin="huge.yaml"), tmp_path_factory.mktemp("huge.out"))


def test_600_images_synthesize_within_cloudformations_limits_in_every_stack(huge_app: Synthesized) -> None:
    assert len(huge_app.config.images) == 600
    templates = sorted(huge_app.outdir.glob("*.template.json"))
    assert [path.name for path in templates] == ["EcrMirror-eu-west-1.template.json", "EcrMirror.template.json"]
    for path in templates:
        data = json.loads(path.read_text())
        assert len(data["Resources"]) < MAX_RESOURCES, path.name
        assert len(data.get("Outputs", {})) <= 200 and len(data.get("Parameters", {})) <= 200
        assert path.stat().st_size <= 1_000_000, path.name


def test_600_images_are_no_repository_of_any_stack_and_get_their_settings_from_creation_templates(
    huge_app: Synthesized,
) -> None:
    for path in huge_app.outdir.glob("*.template.json"):
        kinds = [r["Type"] for r in json.loads(path.read_text())["Resources"].values()]
        # The home stack's two are the build's own image and cache repositories.
        assert kinds.count("AWS::ECR::Repository") == (2 if path.name == "EcrMirror.template.json" else 0)
    for prefix in ("mirror", "services"):  # 590 images at their default location, 10 targets under services/
        policy = Capture()
        huge_app.template.has_resource_properties("AWS::ECR::RepositoryCreationTemplate", {
            "Prefix": prefix, "AppliedFor": ["CREATE_ON_PUSH"], "ImageTagMutability": "MUTABLE",
            "EncryptionConfiguration": {"EncryptionType": "AES256"},
            "LifecyclePolicy": Match.string_like_regexp('"tagStatus":"untagged"'),
            "RepositoryPolicy": policy,
        })
        assert json.loads(plain(policy.as_object())) == pull_policy(ACCOUNTS, None)


def test_600_images_stay_within_ecrs_replication_and_scanning_filters(huge_app: Synthesized) -> None:
    [replication] = [r["Properties"] for r in huge_app.data["Resources"].values()
                     if r["Type"] == "AWS::ECR::ReplicationConfiguration"]
    [rule] = replication["ReplicationConfiguration"]["Rules"]
    assert [f["Filter"] for f in rule["RepositoryFilters"]] == [
        "docker-hub/", "ecr-public/", "quay/", "k8s/", "mirror/", *sorted(f"services/svc-{n}" for n in range(10))]
    [scanning] = [r["Properties"] for r in huge_app.data["Resources"].values()
                  if r["Type"] == "AWS::ECR::RegistryScanningConfiguration"]
    assert len(scanning["Rules"][0]["RepositoryFilters"]) <= shapes("ecr")["ScanningRepositoryFilterList"]["max"]


def test_the_counts_synth_checks_are_those_of_the_written_templates(tmp_path: Path) -> None:
    # Given the CLI's version reporting (CDK adds CDKMetadata) and the default synthesizer (BootstrapVersion)
    app = cdk_app(tmp_path, **{"aws:cdk:version-reporting": True})
    build(app, parse_config(six_hundred(), origin="huge.yaml"))
    expected = {stack.artifact_id: counts(stack) for stack in app.node.children if isinstance(stack, Stack)}

    app.synth()

    for artifact, expect in expected.items():
        data = json.loads((tmp_path / f"{artifact}.template.json").read_text())
        assert expect == {"resources": len(data["Resources"]), "outputs": len(data.get("Outputs", {})),
                          "parameters": len(data.get("Parameters", {}))}, artifact


def test_a_stack_over_cloudformations_resource_limit_stops_synth_with_one_line(tmp_path: Path) -> None:
    # No valid config gets there any more (the SSM contract bounds the targets first), so the stack is padded.
    app = cdk_app(tmp_path)
    stack = build(app, parse_config({"images": [{"source": "python", "tags": ["3"]}]}, origin="mirror.yaml"))
    for n in range(MAX_RESOURCES + 1 - counts(stack)["resources"]):
        CfnResource(stack, f"Pad{n}", type="AWS::CloudFormation::WaitConditionHandle")

    with pytest.raises(ConfigError) as caught:
        check_counts(app, "mirror.yaml")

    assert str(caught.value) == (
        "mirror.yaml: stack EcrMirror would declare 501 resources, over CloudFormation's 500 per stack: give targets "
        "outside repositories.prefix fewer parent paths (each has its own creation template), or leave their target "
        "out")


def test_a_template_over_cloudformations_1_mb_stops_the_app_with_one_line(tmp_path: Path) -> None:
    # Given 60 targets with a parent each (a creation template each) and a pull policy for 200 accounts in each
    images = [{"source": f"ghcr.io/org/s{n}", "tags": ["1"], "target": f"teams/t{n}/app"} for n in range(60)]
    accounts = [f"{n:012d}" for n in range(1, 201)]
    path = tmp_path / "wide.yaml"
    path.write_text(json.dumps({"images": images, "sharing": {"accounts": accounts}}))  # JSON is YAML

    # When the app synthesizes it as `cdk synth` runs it
    done = run_app(path, tmp_path / "out")

    # Then it stops with one line naming the template, its size and the limit
    assert done.returncode == 1
    # (jsii's own lines about this machine's Node.js come first: not the app's)
    [line] = [line for line in done.stderr.splitlines() if not line.startswith("b'")]
    assert re.fullmatch(rf"error: {re.escape(str(path))}: EcrMirror\.template\.json is \d+ bytes, over "
                        r"CloudFormation's 1000000 \(1 MB\) per template: give targets outside repositories\.prefix "
                        r"fewer parent paths, or share with the organization \(sharing\.organization_id\) instead "
                        r"of many accounts", line), line
