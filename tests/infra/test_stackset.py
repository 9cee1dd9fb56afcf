"""The organization's StackSet: every member account gets the contract (SSM parameters, EcrMirrorPull) with no
hand-over, and reads the setup module from the mirror's bucket, which only the organization and the listed
accounts may read. Asserted on the synthesized templates, the member template included."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match
from cfnlint.api import ManualArgs, lint_file

from ecr_mirror_cdk.adopt import MirrorAdoption
from ecr_mirror_cdk.buildspec import SETUP_LINE
from ecr_mirror_cdk.config import ConfigError
from ecr_mirror_cdk.config_parse import parse_config
from ecr_mirror_cdk.contract import mirror_map
from ecr_mirror_cdk.setup_archive import setup_archive
from stacks.adoption_report import REQUIRED
from stacks.member import BUILD_PARAMETERS, MemberStack, checked_template
from tests.build import cfn
from tests.support.cdk import cdk_app

from .conftest import ACCOUNTS, ORG, REPO, ROOT, SHARED, Synthesized, synthesize

MIRROR = "999988887777"  # the mirror's account, as CloudFormation fills AWS::AccountId in
MEMBER = "123456789012"  # a member account
HOME, REPLICAS = "us-east-1", ["eu-west-1", "us-west-2"]
BUCKET = "ecrmirror-setupbucket-abc123"
KEY = "ecr_mirror_cdk/setup_mirror.py"
FILL = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
        "ecr:BatchImportUpstreamImage", "ecr:CreateRepository"]
# SHARED's cache prefixes and the mirror prefix its images are copied under (contract.pull_repositories).
REPOSITORIES = ["docker-hub/*", "mirror/*", "quay/*"]


def stack_set(app: Synthesized) -> dict[str, Any]:
    (found,) = [r for r in app.data["Resources"].values() if r["Type"] == "AWS::CloudFormation::StackSet"]
    return found


def member(app: Synthesized) -> dict[str, Any]:
    """The member template as the StackSet carries it."""
    return json.loads(stack_set(app)["Properties"]["TemplateBody"])


def deployed(template: dict[str, Any], region: str) -> dict[str, dict[str, Any]]:
    """What a stack instance of the member template holds in `region` of MEMBER: resources by logical id,
    with conditions, Fn::If and Refs evaluated as CloudFormation would (the StackSet's parameter values)."""
    refs = {"AWS::AccountId": MEMBER, "AWS::Region": region, "MirrorAccount": MIRROR, "MirrorHomeRegion": HOME,
            "MirrorSetupBucket": BUCKET}
    conditions: dict[str, bool] = {}

    def condition(value: Any) -> bool:
        (function, argument), = value.items()
        if function == "Condition":
            return conditions[argument]
        if function == "Fn::Equals":
            return cfn.resolve(argument[0], refs) == cfn.resolve(argument[1], refs)
        if function == "Fn::Not":
            return not condition(argument[0])
        raise KeyError(function)

    def select(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"Fn::If"}:
            name, yes, no = value["Fn::If"]
            return select(yes if conditions[name] else no)
        if isinstance(value, dict):
            return {k: select(v) for k, v in value.items()}
        if isinstance(value, list):
            return [select(v) for v in value]
        return value

    for name, expression in template["Conditions"].items():
        conditions[name] = condition(expression)
    return {key: cfn.resolve(select(resource["Properties"]), refs)
            for key, resource in template["Resources"].items()
            if conditions.get(resource.get("Condition", ""), True)}


def parameters(resources: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {p["Name"]: (p["Type"], p["Value"]) for p in resources.values() if "Tier" in p}


def unordered(document: dict[str, Any]) -> dict[str, Any]:
    """A policy with its action and resource lists sorted: cdk.json's @aws-cdk/aws-iam:minimizePolicies orders them
    by their unresolved text."""
    return {**document, "Statement": [{k: sorted(v) if isinstance(v, list) else v for k, v in statement.items()}
                                      for statement in document["Statement"]]}


def arns(regions: list[str]) -> list[str]:
    return [f"arn:aws:ecr:{region}:{MIRROR}:repository/{name}" for region in regions for name in REPOSITORIES]


# --- the StackSet -------------------------------------------------------------------------------------


def test_the_stackset_is_service_managed_deploys_to_joining_accounts_and_removes_from_leaving_ones(
    shared_app: Synthesized,
) -> None:
    shared_app.template.has_resource_properties("AWS::CloudFormation::StackSet", {
        "StackSetName": "EcrMirror-Contract",
        "PermissionModel": "SERVICE_MANAGED",
        "CallAs": "DELEGATED_ADMIN",
        "AutoDeployment": {"Enabled": True, "RetainStacksOnAccountRemoval": False},
        "Capabilities": ["CAPABILITY_NAMED_IAM"],
        "TemplateBody": Match.any_value(),
    })


def test_the_stackset_targets_the_organization_root_but_the_mirror_account_in_home_and_replica_regions(
    shared_app: Synthesized,
) -> None:
    assert stack_set(shared_app)["Properties"]["StackInstancesGroup"] == [{
        "DeploymentTargets": {"OrganizationalUnitIds": [ROOT], "Accounts": [{"Ref": "AWS::AccountId"}],
                              "AccountFilterType": "DIFFERENCE"},
        "Regions": [{"Ref": "AWS::Region"}, *REPLICAS],
    }]


def test_a_failing_member_account_never_fails_the_stackset_operation_so_never_the_mirror_stack(
    shared_app: Synthesized,
) -> None:
    # Tolerate every account of a region failing: the operation still ends SUCCEEDED, the state the StackSet
    # resource's handler stabilizes on; with nothing stopped early, every account and region at once.
    shared_app.template.has_resource_properties("AWS::CloudFormation::StackSet", {
        "OperationPreferences": {"FailureTolerancePercentage": 100, "MaxConcurrentPercentage": 100,
                                 "ConcurrencyMode": "SOFT_FAILURE_TOLERANCE", "RegionConcurrencyType": "PARALLEL"},
    })
    preferences = stack_set(shared_app)["Properties"]["OperationPreferences"]
    assert "FailureToleranceCount" not in preferences and "MaxConcurrentCount" not in preferences


def test_the_stackset_names_the_mirror_account_its_region_and_its_setup_bucket(shared_app: Synthesized) -> None:
    bucket = shared_app.logical_id("AWS::S3::Bucket")
    assert stack_set(shared_app)["Properties"]["Parameters"] == [
        {"ParameterKey": "MirrorAccount", "ParameterValue": {"Ref": "AWS::AccountId"}},
        {"ParameterKey": "MirrorHomeRegion", "ParameterValue": {"Ref": "AWS::Region"}},
        {"ParameterKey": "MirrorSetupBucket", "ParameterValue": {"Ref": bucket}},
    ]


def test_the_stackset_is_created_after_the_setup_module_is_in_the_bucket(shared_app: Synthesized) -> None:
    (deployment,) = [k for k, r in shared_app.data["Resources"].items() if r["Type"] == "Custom::CDKBucketDeployment"]
    assert deployment in stack_set(shared_app)["DependsOn"]


def test_ou_targets_and_the_management_account_pass_through_and_no_replica_means_the_home_region_only(
    tmp_path: Path,
) -> None:
    sharing = {"organization_id": ORG, "stack_set": {"targets": ["ou-a1b2-c3d4e5f6", "ou-a1b2-g7h8i9j0"],
                                                     "call_as": "SELF"}}
    app = synthesize(parse_config({**SHARED, "sharing": sharing, "replication": None}), tmp_path)

    properties = stack_set(app)["Properties"]
    assert properties["CallAs"] == "SELF"
    (group,) = properties["StackInstancesGroup"]
    assert group["DeploymentTargets"]["OrganizationalUnitIds"] == ["ou-a1b2-c3d4e5f6", "ou-a1b2-g7h8i9j0"]
    assert group["Regions"] == [{"Ref": "AWS::Region"}]


def test_without_an_organization_there_is_no_stackset_and_no_setup_bucket(default_app: Synthesized) -> None:
    types = {r["Type"] for r in default_app.data["Resources"].values()}
    assert not types & {"AWS::CloudFormation::StackSet", "AWS::S3::Bucket", "Custom::CDKBucketDeployment"}


# --- the member template ------------------------------------------------------------------------------


def test_the_member_template_needs_no_cdk_bootstrap_in_the_member_accounts(shared_app: Synthesized) -> None:
    body = stack_set(shared_app)["Properties"]["TemplateBody"]
    template = json.loads(body)

    assert "Rules" not in template  # no CheckBootstrapVersion
    assert sorted(template["Parameters"]) == ["MirrorAccount", "MirrorHomeRegion", "MirrorSetupBucket"]
    assert "cdk-hnb659fds" not in body and "aws:asset" not in body
    assert {r["Type"] for r in template["Resources"].values()} == {"AWS::SSM::Parameter", "AWS::IAM::ManagedPolicy"}
    assert len(body.encode()) < 51_200


def test_a_member_account_in_the_home_region_gets_the_contract_and_the_policy(shared_app: Synthesized) -> None:
    resources = deployed(member(shared_app), HOME)

    assert parameters(resources) == {
        "/ecr-mirror/registry-uri": ("String", f"{MIRROR}.dkr.ecr.{HOME}.amazonaws.com"),
        # The same host: MirrorAdoption reads it in every region, and the setup ignores it at home.
        "/ecr-mirror/home-registry-uri": ("String", f"{MIRROR}.dkr.ecr.{HOME}.amazonaws.com"),
        "/ecr-mirror/mirror-map": ("String", mirror_map(shared_app.config)),
        "/ecr-mirror/setup-bucket": ("String", BUCKET),
        "/ecr-mirror/setup-key": ("String", KEY),
        "/ecr-mirror/pull-repository-arns": ("StringList", ",".join(arns([HOME]))),
    }
    assert "EcrMirrorPull" in resources


def test_a_member_account_in_a_replica_region_pulls_locally_then_from_home_and_has_no_second_policy(
    shared_app: Synthesized,
) -> None:
    resources = deployed(member(shared_app), "eu-west-1")

    assert parameters(resources) == {
        "/ecr-mirror/registry-uri": ("String", f"{MIRROR}.dkr.ecr.eu-west-1.amazonaws.com"),
        "/ecr-mirror/home-registry-uri": ("String", f"{MIRROR}.dkr.ecr.{HOME}.amazonaws.com"),
        "/ecr-mirror/mirror-map": ("String", mirror_map(shared_app.config)),
        "/ecr-mirror/setup-bucket": ("String", BUCKET),
        "/ecr-mirror/setup-key": ("String", KEY),
        "/ecr-mirror/pull-repository-arns": ("StringList", ",".join(arns(["eu-west-1", HOME]))),
    }
    assert "EcrMirrorPull" not in resources  # IAM is global: the home region's stack instance holds it


def test_ecr_mirror_pull_grants_the_login_the_pulls_in_every_region_the_setup_module_and_the_parameters(
    shared_app: Synthesized,
) -> None:
    policy = deployed(member(shared_app), HOME)["EcrMirrorPull"]

    def parameter_arns(region: str, names: list[str]) -> list[str]:
        return [f"arn:aws:ssm:{region}:{MEMBER}:parameter/ecr-mirror/{name}" for name in names]

    build = ["registry-uri", "mirror-map", "setup-bucket", "setup-key"]
    assert policy["ManagedPolicyName"] == "EcrMirrorPull"
    assert unordered(policy["PolicyDocument"]) == unordered({"Version": "2012-10-17", "Statement": [
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Sid": "MirrorPull", "Effect": "Allow", "Action": FILL, "Resource": arns([HOME, *REPLICAS])},
        {"Sid": "SetupModule", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/{KEY}"},
        {"Sid": "MirrorParameters", "Effect": "Allow", "Action": "ssm:GetParameters", "Resource": [
            *parameter_arns(HOME, build),
            *(arn for region in REPLICAS for arn in parameter_arns(region, [*build, "home-registry-uri"]))]},
    ]})


def test_mirror_adoption_without_arguments_finds_every_parameter_it_reads_in_a_member_account(
    shared_app: Synthesized, tmp_path: Path,
) -> None:
    app = cdk_app(tmp_path)
    stack = Stack(app, "Team")
    project = codebuild.Project(stack, "Build", environment=codebuild.BuildEnvironment(privileged=True),
                                build_spec=codebuild.BuildSpec.from_object({"version": "0.2", "phases": {}}))
    MirrorAdoption(stack, "Mirror").adopt(project)
    app.synth()
    template = json.loads((tmp_path / "Team.template.json").read_text())
    read = {p["Default"]: p["Type"] for p in template["Parameters"].values()
            if p["Type"].startswith("AWS::SSM::Parameter::Value") and p["Default"].startswith("/ecr-mirror/")}
    published = {name: kind for name, (kind, _) in parameters(deployed(member(shared_app), HOME)).items()}

    assert read  # the adoption reads the contract from SSM
    kinds = {"AWS::SSM::Parameter::Value<String>": "String", "AWS::SSM::Parameter::Value<List<String>>": "StringList"}
    assert {name: kinds[kind] for name, kind in read.items()} == {name: published[name] for name in read}


def test_the_member_template_is_checked_by_cdk_nag_an_unacknowledged_finding_stops_synth(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path))
    stack = MemberStack(app, "Member", config=parse_config(SHARED))
    sqs.Queue(stack, "Unsafe")  # no SSL enforcement, no dead-letter queue

    with pytest.raises(RuntimeError, match="AwsSolutions-SQS4"):
        checked_template(stack)


def test_cfn_lint_finds_no_errors_in_the_member_template(shared_app: Synthesized, tmp_path: Path) -> None:
    path = tmp_path / "member.template.json"
    path.write_text(json.dumps(member(shared_app)))

    matches = lint_file(path, ManualArgs(regions=[HOME, *REPLICAS]))
    assert [f"{m.rule.id} {m.path_string}: {m.message}" for m in matches] == []


def test_a_policy_over_iams_managed_policy_limit_fails_synth_with_one_line(tmp_path: Path) -> None:
    # Each target elsewhere is named in the policy (images at mirror/<host>/<path> share one mirror/*).
    images = [{"source": f"gcr.io/team/image-{n:03d}", "tags": ["1"], "target": f"team{n:03d}/image"}
              for n in range(40)]
    config = parse_config({**SHARED, "images": images}, origin="big.yaml")

    with pytest.raises(ConfigError) as caught:
        synthesize(config, tmp_path)

    assert str(caught.value).startswith("big.yaml: sharing.stack_set: the EcrMirrorPull policy would reach ")
    assert "\n" not in str(caught.value)


def test_a_member_parameter_over_a_standard_parameters_4_kb_fails_synth_with_one_line(tmp_path: Path) -> None:
    # With one replica region the pull ARNs (here and at home) pass 4 KB before EcrMirrorPull passes IAM's limit.
    images = [{"source": f"gcr.io/team/image-{n:03d}", "tags": ["1"], "target": f"team{n:03d}/image"}
              for n in range(29)]
    config = parse_config({**SHARED, "images": images, "replication": {"regions": ["eu-west-1"]}}, origin="big.yaml")

    with pytest.raises(ConfigError) as caught:
        synthesize(config, tmp_path)

    assert str(caught.value).startswith("big.yaml: sharing.stack_set: the member accounts' SSM parameter "
                                        "/ecr-mirror/pull-repository-arns would reach ")
    assert str(caught.value).endswith("over a standard parameter's 4096; copy fewer images outside "
                                      "repositories.prefix (target) or replicate to fewer regions")


# --- the setup bucket ---------------------------------------------------------------------------------


def test_the_setup_bucket_lets_only_the_accounts_and_the_organization_read_the_setup_module(
    shared_app: Synthesized,
) -> None:
    bucket = shared_app.logical_id("AWS::S3::Bucket")
    (policy,) = [r["Properties"] for r in shared_app.data["Resources"].values() if r["Type"] == "AWS::S3::BucketPolicy"]
    arn = f"arn:aws:s3:::{BUCKET}"
    refs = {f"{bucket}.Arn": arn, "AWS::Partition": "aws"}

    assert cfn.resolve(policy["PolicyDocument"], refs) == {"Version": "2012-10-17", "Statement": [
        {"Action": "s3:*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}, "Effect": "Deny",
         "Principal": {"AWS": "*"}, "Resource": [arn, f"{arn}/*"]},
        {"Action": "s3:GetObject", "Effect": "Allow",
         "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in ACCOUNTS]}, "Resource": f"{arn}/{KEY}",
         "Sid": "SetupModuleForAccounts"},
        {"Action": "s3:GetObject", "Condition": {"StringEquals": {"aws:PrincipalOrgID": ORG}}, "Effect": "Allow",
         "Principal": {"AWS": "*"}, "Resource": f"{arn}/{KEY}", "Sid": "SetupModuleForOrganization"},
    ]}


def test_the_setup_bucket_blocks_public_access_and_is_encrypted(shared_app: Synthesized) -> None:
    shared_app.template.has_resource_properties("AWS::S3::Bucket", {
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
    })


def test_the_object_copied_into_the_bucket_is_the_setup_archive_at_the_published_key(shared_app: Synthesized) -> None:
    (deployment,) = [r["Properties"] for r in shared_app.data["Resources"].values()
                     if r["Type"] == "Custom::CDKBucketDeployment"]
    (key,) = deployment["SourceObjectKeys"]
    source = shared_app.outdir / f"asset.{key.removesuffix('.zip')}"

    assert [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()] == [KEY]
    assert (source / KEY).read_bytes() == setup_archive()
    assert deployment["RetainOnDelete"] is False


# --- the manual's recipe for projects in other tools --------------------------------------------------


def test_the_manual_recipe_reads_the_parameters_the_stackset_publishes_and_runs_the_setup_line() -> None:
    manual = (REPO / "docs" / "adopt.md").read_text()
    recipe = manual[manual.index("## Projects in other tools"):manual.index("## Which projects still pull")]
    wanted = dict(zip(REQUIRED, BUILD_PARAMETERS, strict=True))

    table = dict(re.findall(r"\| `(MIRROR_\w+)` \| `PARAMETER_STORE` \| `(/ecr-mirror/[\w-]+)` \|", recipe))
    jq = dict(re.findall(r'\{name: "(MIRROR_\w+)", value: "(/ecr-mirror/[\w-]+)"\}', recipe))
    hcl = dict(re.findall(r'(MIRROR_\w+) += "(/ecr-mirror/[\w-]+)"', recipe))
    ts = {name: f"/ecr-mirror/{key}" for name, key in re.findall(r"(MIRROR_\w+): fromSsm\('([\w-]+)'\)", recipe)}
    assert table == jq == hcl == ts == wanted

    (terraform,) = re.findall(r"- (\(why=.*)", recipe)
    assert terraform.replace("$${", "${") == SETUP_LINE  # HCL's escape for a literal ${
    assert re.findall(r"const SETUP_LINE = '(.*)';", recipe) == [SETUP_LINE]
