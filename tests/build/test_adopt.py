"""A second CDK app, a team's, whose existing CodeBuild projects adopt the mirror in one call: from the mirror's
SSM contract (same account) or from its stack outputs (another account). Synthesized with cdk-nag, cfn-lint clean."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk import Acknowledgment, Environment, NestedStack, Stack, Token, Validations
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk.assertions import Capture, Match, Template
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint_file

from ecr_mirror_cdk.adopt import MIRROR_VARIABLES, AdoptionError, MirrorAdoption
from ecr_mirror_cdk.buildspec import SETUP_LINE
from ecr_mirror_cdk.config_parse import load_config
from ecr_mirror_cdk.contract import mirror_map
from ecr_mirror_cdk.setup_archive import setup_archive
from tests.build import cfn
from tests.build.conftest import REPO
from tests.build.test_buildspec import needs_shellcheck, shellcheck
from tests.support.cdk import cdk_app

TEAM = "Team"
OTHER_REGISTRY = "111122223333.dkr.ecr.eu-west-1.amazonaws.com"
MIRROR_MAP = mirror_map(load_config(REPO / "mirror.yaml"))
PULL = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:BatchImportUpstreamImage",
        "ecr:CreateRepository", "ecr:GetDownloadUrlForLayer"]
NPM_SECRET = f"arn:aws:secretsmanager:{cfn.REGION}:{cfn.ACCOUNT}:secret:team/npm"


def inline_spec(npm_secret_arn: str) -> dict[str, Any]:
    return {
        "version": "0.2",
        "env": {"secrets-manager": {"NPM_TOKEN": f"{npm_secret_arn}:token"}},
        "phases": {
            "install": {"runtime-versions": {"nodejs": "20"}, "commands": ["npm ci"]},
            "build": {"commands": ["docker build -t app .", "docker run --rm app npm test"]},
        },
        "artifacts": {"files": ["dist/**/*"]},
    }


YAML_SPEC = {"version": "0.2", "phases": {"build": {"commands": ["make image"]}}}
PRIVILEGED = codebuild.BuildEnvironment(privileged=True)


def team_projects(stack: Stack) -> dict[str, codebuild.Project]:
    """What the team had before the mirror: nag-clean on its own (its findings acknowledged, as a team would)."""
    npm = secretsmanager.Secret.from_secret_name_v2(stack, "Npm", "team/npm")
    privileged = codebuild.BuildEnvironment(privileged=True)
    return acknowledged({
        "Inline": codebuild.Project(
            stack, "Inline", build_spec=codebuild.BuildSpec.from_object(inline_spec(npm.secret_arn)),
            environment=privileged, environment_variables={"TEAM": codebuild.BuildEnvironmentVariable(value="web")}),
        "Yaml": codebuild.Project(stack, "Yaml", build_spec=codebuild.BuildSpec.from_object_to_yaml(YAML_SPEC),
                                  environment=privileged),
        "FromFile": codebuild.PipelineProject(
            stack, "FromFile", build_spec=codebuild.BuildSpec.from_source_filename("ci/buildspec.yml"),
            environment=privileged),
        "Lint": codebuild.PipelineProject(stack, "Lint"),  # not privileged: no dockerd
    })


def acknowledged(projects: dict[str, codebuild.Project]) -> dict[str, codebuild.Project]:
    """The team's own cdk-nag findings on its projects, acknowledged as a team would."""
    for project in projects.values():
        stack = Stack.of(project)
        # cdk-nag names the ARN as the template has it: tokens, or the values of a stack with an environment.
        arn = ("arn:<AWS::Partition>:{}:<AWS::Region>:<AWS::AccountId>:{}" if Token.is_unresolved(stack.region)
               else f"arn:aws:{{}}:{stack.region}:{stack.account}:{{}}")
        logical_id = stack.resolve(stack.get_logical_id(project.node.default_child))  # type: ignore[arg-type]
        Validations.of(project).acknowledge(Acknowledgment(
            id="AwsSolutions-CB4", reason="The team's artifacts are encrypted with the AWS-managed S3 key."))
        for resource in (arn.format("logs", f"log-group:/aws/codebuild/<{logical_id}>:*"),
                         arn.format("codebuild", f"report-group/<{logical_id}>-*")):
            Validations.of(project).acknowledge(Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::{resource}]", reason="CodeBuild's default log and report grants."))
    return projects


@dataclass
class TeamApp:
    outdir: Path
    data: dict[str, Any]
    template: Template
    messages: list[tuple[str, str, str]]  # level, construct path, text
    projects: dict[str, str]  # construct id -> logical id
    roles: dict[str, str]

    def properties(self, name: str) -> dict[str, Any]:
        return self.data["Resources"][self.projects[name]]["Properties"]

    def parameter(self, name: str) -> str:
        """The template parameter CDK made for an SSM parameter read at deploy time."""
        (found,) = [k for k, p in self.data.get("Parameters", {}).items() if p.get("Default") == name]
        return found

    def refs(self) -> dict[str, str]:
        return {k: f"<{p['Default']}>" for k, p in self.data.get("Parameters", {}).items()}

    def spec(self, name: str) -> dict[str, Any]:
        return json.loads(cfn.resolve(self.properties(name)["Source"]["BuildSpec"], self.refs()))

    def variables(self, name: str) -> dict[str, str]:
        variables = self.properties(name)["Environment"].get("EnvironmentVariables", [])
        assert all(v["Type"] == "PLAINTEXT" for v in variables)
        return {v["Name"]: cfn.resolve(v["Value"], self.refs()) for v in variables}

    def statements(self, name: str) -> list[dict[str, Any]]:
        (policy,) = [r for r in self.data["Resources"].values() if r["Type"] == "AWS::IAM::Policy"
                     and r["Properties"]["Roles"] == [{"Ref": self.roles[name]}]]
        return policy["Properties"]["PolicyDocument"]["Statement"]

    def asset(self) -> tuple[str, Path]:
        """The one file asset: (object key, source file in the cloud assembly)."""
        manifest = json.loads((self.outdir / f"{TEAM}.assets.json").read_text())
        (entry,) = [e for e in manifest["files"].values() if not e["source"]["path"].endswith(".template.json")]
        (destination,) = entry["destinations"].values()
        return destination["objectKey"], self.outdir / entry["source"]["path"]


def synth_team(outdir: Path, adopt: Callable[[Stack, dict[str, codebuild.Project]], None],
               projects_of: Callable[[Stack], dict[str, codebuild.Project]] = team_projects,
               env: Environment | None = None) -> TeamApp:
    app = cdk_app(outdir)
    stack = Stack(app, TEAM, env=env)
    projects = projects_of(stack)
    adopt(stack, projects)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    assembly = app.synth()  # raises on any unacknowledged cdk-nag finding
    messages = [(m.level.value.lower(), m.id, str(m.entry.data))
                for m in assembly.get_stack_artifact(stack.artifact_id).messages]
    data = json.loads((outdir / f"{TEAM}.template.json").read_text())

    def logical_id(construct: Any) -> str:
        return str(stack.resolve(stack.get_logical_id(construct.node.default_child)))

    return TeamApp(outdir, data, Template.from_json(data), messages,
                   {name: logical_id(p) for name, p in projects.items()},
                   {name: logical_id(p.role) for name, p in projects.items()})


@pytest.fixture(scope="module")
def same_account(tmp_path_factory: pytest.TempPathFactory) -> TeamApp:
    """Every project of the stack, by the Aspect, from the mirror's SSM parameters."""
    return synth_team(tmp_path_factory.mktemp("team-same.out"),
                      lambda stack, _: MirrorAdoption(stack, "Mirror").adopt_all(stack))


@pytest.fixture(scope="module")
def other_account(tmp_path_factory: pytest.TempPathFactory) -> TeamApp:
    """Chosen projects, one call each, from the mirror stack's outputs RegistryUri and MirrorMap."""
    def adopt(stack: Stack, projects: dict[str, codebuild.Project]) -> None:
        adoption = MirrorAdoption(stack, "Mirror", registry_uri=OTHER_REGISTRY, mirror_map=MIRROR_MAP)
        for name in ("Inline", "Yaml", "FromFile"):
            adoption.adopt(projects[name])

    return synth_team(tmp_path_factory.mktemp("team-other.out"), adopt)


@pytest.fixture(params=["same_account", "other_account"])
def team(request: pytest.FixtureRequest) -> TeamApp:
    return request.getfixturevalue(request.param)


# --- the buildspec ------------------------------------------------------------------------------------


def test_an_inline_buildspec_runs_the_setup_line_first_and_is_otherwise_unchanged(team):
    expected = inline_spec(NPM_SECRET)
    expected["phases"]["install"]["commands"] = [SETUP_LINE, "npm ci"]
    assert team.spec("Inline") == expected


def test_a_yaml_buildspec_without_an_install_phase_gets_one_with_the_setup_line(team):
    assert team.spec("Yaml") == {"version": "0.2", "phases": {"install": {"commands": [SETUP_LINE]},
                                                              "build": {"commands": ["make image"]}}}


def test_a_buildspec_file_in_the_source_is_left_as_it_is_with_an_info_naming_the_line_to_add(team):
    assert team.properties("FromFile")["Source"] == {"Type": "CODEPIPELINE", "BuildSpec": "ci/buildspec.yml"}
    (info,) = [text for level, path, text in team.messages if path == f"/{TEAM}/FromFile" and level == "info"]
    assert "ci/buildspec.yml in the source" in info
    assert info.endswith(f"make this the first command of phases.install.commands (with a custom build image, the "
                         f"first after the command that starts dockerd): {SETUP_LINE}")


def test_a_token_of_another_stack_in_the_buildspec_renders_as_it_does_without_the_mirror():
    def intrinsics(adopt: bool) -> list[Any]:
        app = cdk_app()
        npm = secretsmanager.Secret(Stack(app, "Shared"), "Npm")
        stack = Stack(app, TEAM)
        project = codebuild.Project(
            stack, "Inline", build_spec=codebuild.BuildSpec.from_object(inline_spec(npm.secret_arn)),
            environment=codebuild.BuildEnvironment(privileged=True))
        if adopt:
            MirrorAdoption(stack, "Mirror").adopt(project)
        (resource,) = Template.from_stack(stack).find_resources("AWS::CodeBuild::Project").values()
        parts = resource["Properties"]["Source"]["BuildSpec"]["Fn::Join"][1]
        spec = json.loads("".join(part if isinstance(part, str) else "<npm>" for part in parts))
        assert spec["env"]["secrets-manager"] == {"NPM_TOKEN": "<npm>:token"}
        return [part for part in parts if not isinstance(part, str)]

    (reference,) = intrinsics(adopt=True)
    assert [reference] == intrinsics(adopt=False)  # the cross-stack reference, not the other stack's Ref
    assert "Ref" not in reference


# --- environment --------------------------------------------------------------------------------------


def test_the_project_keeps_its_variables_and_gets_the_mirrors_from_ssm(same_account):
    key, _ = same_account.asset()
    same_account.template.has_resource_properties("AWS::CodeBuild::Project", {
        "Source": Match.object_like({"Type": "NO_SOURCE"}),
        "Environment": Match.object_like({"EnvironmentVariables": [
            {"Name": "TEAM", "Type": "PLAINTEXT", "Value": "web"},
            {"Name": "MIRROR_REGISTRY", "Type": "PLAINTEXT",
             "Value": {"Ref": same_account.parameter("/ecr-mirror/registry-uri")}},
            {"Name": "MIRROR_MAP", "Type": "PLAINTEXT",
             "Value": {"Ref": same_account.parameter("/ecr-mirror/mirror-map")}},
            {"Name": "MIRROR_SETUP_BUCKET", "Type": "PLAINTEXT",
             "Value": {"Fn::Sub": "cdk-hnb659fds-assets-${AWS::AccountId}-${AWS::Region}"}},
            {"Name": "MIRROR_SETUP_KEY", "Type": "PLAINTEXT", "Value": key},
            # In a replica region, what replication has not brought; at home the registry itself (then ignored).
            {"Name": "MIRROR_HOME_REGISTRY", "Type": "PLAINTEXT",
             "Value": {"Ref": same_account.parameter("/ecr-mirror/home-registry-uri")}},
        ]}),
    })


def test_another_accounts_project_gets_the_registry_and_map_it_was_given(other_account):
    key, _ = other_account.asset()
    for name in ("Inline", "FromFile"):
        own = {"TEAM": "web"} if name == "Inline" else {}
        assert other_account.variables(name) == {
            **own, "MIRROR_REGISTRY": OTHER_REGISTRY, "MIRROR_MAP": MIRROR_MAP,
            "MIRROR_SETUP_BUCKET": f"cdk-hnb659fds-assets-{cfn.ACCOUNT}-{cfn.REGION}", "MIRROR_SETUP_KEY": key}


def test_the_setup_file_the_builds_fetch_is_the_setup_archive(team):
    _, path = team.asset()
    assert path.read_bytes() == setup_archive()


# --- IAM ----------------------------------------------------------------------------------------------


def test_the_role_gets_the_ecr_token_the_mirrors_pulls_and_the_setup_module_only(same_account):
    module = Capture()
    for name in ("Inline", "Yaml", "FromFile"):
        same_account.template.has_resource_properties("AWS::IAM::Policy", {
            "Roles": [{"Ref": same_account.roles[name]}],
            "PolicyDocument": Match.object_like({"Statement": [
                Match.object_like({"Action": Match.array_with(["logs:PutLogEvents"])}),  # CodeBuild's own
                Match.object_like({"Action": Match.array_with(["codebuild:CreateReport"])}),
                {"Action": "ecr:GetAuthorizationToken", "Effect": "Allow", "Resource": "*"},
                {"Action": PULL, "Effect": "Allow",
                 "Resource": {"Ref": same_account.parameter("/ecr-mirror/pull-repository-arns")}},
                {"Action": "s3:GetObject", "Effect": "Allow", "Resource": module},
            ]}),
        })
        key, _ = same_account.asset()
        assert cfn.resolve(module.as_object()) == f"arn:aws:s3:::cdk-hnb659fds-assets-{cfn.ACCOUNT}-{cfn.REGION}/{key}"


def test_another_accounts_role_may_pull_the_mirrors_repositories_in_the_mirror_account(other_account):
    repo = "arn:aws:ecr:eu-west-1:111122223333:repository/"
    (pull,) = [s for s in other_account.statements("Inline") if s["Action"] == PULL]
    assert sorted(cfn.resolve(pull["Resource"])) == [
        f"{repo}docker-hub/*", f"{repo}ecr-public/*", f"{repo}k8s/*",
        f"{repo}mirror/*", f"{repo}mirror/dotnet-runtime", f"{repo}quay/*",
    ]
    actions = sorted(a for s in other_account.statements("Inline") for a in (
        s["Action"] if isinstance(s["Action"], list) else [s["Action"]]) if not a.startswith(("logs:", "codebuild:")))
    assert actions == sorted([*PULL, "ecr:GetAuthorizationToken", "s3:GetObject"])


def test_a_project_in_a_replica_region_pulls_locally_and_falls_back_to_the_home_registry(tmp_path):
    home = "111122223333.dkr.ecr.us-east-1.amazonaws.com"

    def adopt(stack: Stack, projects: dict[str, codebuild.Project]) -> None:
        MirrorAdoption(stack, "Mirror", registry_uri=OTHER_REGISTRY, mirror_map=MIRROR_MAP,
                       home_registry_uri=home).adopt(projects["Inline"])

    replica = synth_team(tmp_path, adopt)

    variables = replica.variables("Inline")
    assert (variables["MIRROR_REGISTRY"], variables["MIRROR_HOME_REGISTRY"]) == (OTHER_REGISTRY, home)
    (pull,) = [s for s in replica.statements("Inline") if s["Action"] == PULL]
    regions = sorted({arn.split(":")[3] for arn in cfn.resolve(pull["Resource"])})
    assert regions == ["eu-west-1", "us-east-1"]  # the same repositories, here and at home
    assert "arn:aws:ecr:us-east-1:111122223333:repository/docker-hub/*" in cfn.resolve(pull["Resource"])


# --- projects the mirror cannot set up ----------------------------------------------------------------


def test_the_aspect_leaves_a_project_that_is_not_privileged_as_it_was_with_an_info(same_account):
    assert "EnvironmentVariables" not in same_account.properties("Lint")["Environment"]
    assert not [s for s in same_account.statements("Lint") if "ecr:GetAuthorizationToken" in str(s["Action"])]
    (info,) = [text for level, path, text in same_account.messages if path == f"/{TEAM}/Lint" and level == "info"]
    assert info.startswith("MirrorAdoption: not adopted: not privileged")


def new_team() -> tuple[Stack, dict[str, codebuild.Project]]:
    stack = Stack(cdk_app(), TEAM)
    return stack, team_projects(stack)


def test_adopting_a_project_that_is_not_privileged_is_a_one_line_error_naming_it():
    stack, projects = new_team()
    with pytest.raises(AdoptionError) as error:
        MirrorAdoption(stack, "Mirror").adopt(projects["Lint"])
    assert str(error.value).startswith(f"{TEAM}/Lint: not privileged: the setup restarts dockerd")
    assert "\n" not in str(error.value)


def test_one_adoption_applies_once_and_a_project_that_has_the_mirror_already_is_refused():
    stack, projects = new_team()
    adoption = MirrorAdoption(stack, "Mirror")
    adoption.adopt(projects["Inline"])
    adoption.adopt(projects["Inline"])  # the same adoption again: nothing more
    adoption.adopt_all(stack)
    with pytest.raises(AdoptionError, match=f"^{TEAM}/Inline: already adopted by {TEAM}/Mirror$"):
        MirrorAdoption(stack, "Again").adopt(projects["Inline"])
    own = codebuild.Project(stack, "Own", build_spec=codebuild.BuildSpec.from_object(YAML_SPEC),
                            environment=codebuild.BuildEnvironment(privileged=True),
                            environment_variables={"MIRROR_REGISTRY": codebuild.BuildEnvironmentVariable(value="x")})
    with pytest.raises(AdoptionError, match=f"^{TEAM}/Own: already sets MIRROR_REGISTRY$"):
        adoption.adopt(own)
    spec = Template.from_stack(stack).find_resources("AWS::CodeBuild::Project", {"Properties": {
        "Source": {"Type": "NO_SOURCE"}, "Environment": {"EnvironmentVariables": Match.any_value()}}})
    (inline,) = [p for p in spec.values() if "npm" in json.dumps(p)]
    assert json.dumps(inline).count("setup_mirror.py") == 2  # one setup line: fetch and run


@pytest.mark.parametrize("arguments, message", [
    ({"registry_uri": "registry.example.com", "mirror_map": MIRROR_MAP},
     "MirrorAdoption: registry_uri must be ACCOUNT.dkr.ecr.REGION.amazonaws.com, got 'registry.example.com'"),
    ({"registry_uri": OTHER_REGISTRY, "mirror_map": "{not json"},
     "MirrorAdoption: mirror_map must be the mirror stack's MirrorMap output"),
    ({"registry_uri": OTHER_REGISTRY},
     "MirrorAdoption: give registry_uri and mirror_map (another account), or neither"),
    ({"home_registry_uri": OTHER_REGISTRY},
     "MirrorAdoption: home_registry_uri goes with registry_uri and mirror_map"),
    ({"registry_uri": OTHER_REGISTRY, "mirror_map": MIRROR_MAP, "home_registry_uri": "home.example.com"},
     "MirrorAdoption: registry_uri must be ACCOUNT.dkr.ecr.REGION.amazonaws.com, got 'home.example.com'"),
])
def test_bad_coordinates_are_a_one_line_error(arguments, message):
    with pytest.raises(AdoptionError) as error:
        MirrorAdoption(Stack(cdk_app(), TEAM), "Mirror", **arguments)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_project_in_a_region_without_a_replica_pulls_from_the_home_registry_with_one_warning(tmp_path):
    # Given a team stack in eu-west-2 and the mirror in eu-west-1, which does not replicate to eu-west-2
    def adopt(stack: Stack, projects: dict[str, codebuild.Project]) -> None:
        MirrorAdoption(stack, "Mirror", registry_uri=OTHER_REGISTRY, mirror_map=MIRROR_MAP).adopt(projects["Inline"])

    # When it adopts the mirror's own registry (synth with cdk-nag: adopted, not refused)
    team = synth_team(tmp_path, adopt, env=Environment(account=cfn.ACCOUNT, region="eu-west-2"))

    # Then the project points at the home registry and may pull there
    assert team.variables("Inline")["MIRROR_REGISTRY"] == OTHER_REGISTRY
    (pull,) = [s for s in team.statements("Inline") if s["Action"] == PULL]
    assert {arn.split(":")[3] for arn in cfn.resolve(pull["Resource"])} == {"eu-west-1"}
    # and synth warns once, naming the region pair, the cost and the replication that would avoid it
    assert [(level, text) for level, _, text in team.messages if level == "warning"] == [("warning", (
        f"MirrorAdoption: stack {TEAM} is in eu-west-2, the mirror's registry_uri in eu-west-1: every pull crosses "
        "from eu-west-1 to eu-west-2, which AWS bills as inter-region data transfer at both ends "
        "(https://aws.amazon.com/ecr/pricing/); to pull in-region, add eu-west-2 to replication.regions in the "
        "mirror's mirror.yaml and adopt with that replica's registry_uri and home_registry_uri "
        "[ack: ecr-mirror:cross-region]"))]


def test_a_project_in_the_registrys_own_region_gets_no_warning(other_account):
    assert not [m for m in other_account.messages if m[0] == "warning"]


# --- nested stacks and Docker servers -----------------------------------------------------------------


def nested_projects(stack: Stack, own_adoption: bool = False) -> dict[str, codebuild.Project]:
    inner = NestedStack(stack, "Inner")
    if own_adoption:  # another account's coordinates, so the template shows which adoption took the project
        MirrorAdoption(inner, "Mirror", registry_uri=OTHER_REGISTRY, mirror_map=MIRROR_MAP).adopt_all(inner)
    spec = codebuild.BuildSpec.from_object(YAML_SPEC)
    return acknowledged({
        "Outer": codebuild.Project(stack, "Outer", build_spec=spec, environment=PRIVILEGED),
        "Nested": codebuild.Project(inner, "Nested", build_spec=spec, environment=PRIVILEGED),
    })


def nested_project(team: TeamApp) -> tuple[dict[str, Any], dict[str, Any]]:
    """The nested stack's project properties, and the parameters the parent passes the nested stack."""
    (path,) = team.outdir.glob("*.nested.template.json")
    (properties,) = [r["Properties"] for r in json.loads(path.read_text())["Resources"].values()
                     if r["Type"] == "AWS::CodeBuild::Project"]
    (stack,) = [r["Properties"] for r in team.data["Resources"].values() if r["Type"] == "AWS::CloudFormation::Stack"]
    return properties, stack.get("Parameters", {})


def test_adopt_all_adopts_the_projects_of_nested_stacks_through_their_parameters(tmp_path):
    team = synth_team(tmp_path, lambda stack, _: MirrorAdoption(stack, "Mirror").adopt_all(stack), nested_projects)

    properties, passed = nested_project(team)
    assert json.loads(properties["Source"]["BuildSpec"])["phases"]["install"]["commands"] == [SETUP_LINE]
    variables = {v["Name"]: v["Value"] for v in properties["Environment"]["EnvironmentVariables"]}
    assert list(variables) == list(MIRROR_VARIABLES)
    registry = passed[variables["MIRROR_REGISTRY"]["Ref"]]  # a parameter of the nested stack, from the parent's SSM
    assert registry == {"Ref": team.parameter("/ecr-mirror/registry-uri")}
    assert team.variables("Outer")["MIRROR_REGISTRY"] == "</ecr-mirror/registry-uri>"
    assert not [m for m in team.messages if "not adopted" in m[2]]


def test_a_nested_stack_with_its_own_adoption_keeps_its_projects_and_the_parents_adoption_the_rest(tmp_path):
    team = synth_team(tmp_path, lambda stack, _: MirrorAdoption(stack, "Mirror").adopt_all(stack),
                      lambda stack: nested_projects(stack, own_adoption=True))

    properties, _ = nested_project(team)
    variables = {v["Name"]: v["Value"] for v in properties["Environment"]["EnvironmentVariables"]}
    assert variables["MIRROR_REGISTRY"] == OTHER_REGISTRY  # the nested stack's own adoption
    assert json.dumps(properties).count("setup_mirror.py") == 2  # one setup line: fetch and run
    assert team.variables("Outer")["MIRROR_REGISTRY"] == "</ecr-mirror/registry-uri>"
    assert not [m for m in team.messages if "not adopted" in m[2]]


def test_a_docker_server_project_is_adopted_with_one_warning_naming_what_the_mirror_does_not_cover(tmp_path):
    server = codebuild.BuildEnvironment(docker_server=codebuild.DockerServerOptions(
        compute_type=codebuild.DockerServerComputeType.SMALL))  # a remote daemon: not privileged, nothing to restart
    team = synth_team(tmp_path, lambda stack, _: MirrorAdoption(stack, "Mirror").adopt_all(stack),
                      lambda stack: acknowledged({"Docker": codebuild.Project(
                          stack, "Docker", build_spec=codebuild.BuildSpec.from_object(YAML_SPEC), environment=server)}))

    assert team.spec("Docker")["phases"]["install"]["commands"] == [SETUP_LINE]
    assert "MIRROR_REGISTRY" in team.variables("Docker")
    (warning,) = [text for level, path, text in team.messages if level == "warning" and path == f"/{TEAM}/Docker"]
    assert warning.startswith(
        "MirrorAdoption: a Docker server project: the remote daemon's own pulls (docker pull, docker build on the "
        "server) do not come through the mirror; the setup line still configures buildx builders")
    assert "\n" not in warning


# --- every synth is a security and lint check ---------------------------------------------------------


def test_the_adopted_app_has_no_unacknowledged_cdk_nag_finding(team):
    report = json.loads((team.outdir / "validation-report.json").read_text())
    assert [r for r in report["pluginReports"] if r["conclusion"] != "success"] == []


def test_cfn_lint_finds_no_errors_in_the_adopted_app(team):
    matches = lint_file(team.outdir / f"{TEAM}.template.json", ManualArgs(regions=["us-east-1", "eu-west-1"]))
    assert [f"{m.rule.id} {m.path_string}: {m.message}" for m in matches if m.rule.id.startswith("E")] == []


# --- the setup line, as a buildspec file would hold it --------------------------------------------------


@needs_shellcheck
def test_the_setup_line_has_no_shellcheck_findings_as_posix_sh(tmp_path):
    result = shellcheck(tmp_path, "setup.sh", SETUP_LINE, shell="sh")
    assert result.returncode == 0, result.stdout


def test_the_setup_line_fetches_the_module_and_runs_it_with_the_projects_registry_in_posix_sh(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    aws = bin_dir / "aws"  # `aws s3 cp --quiet SOURCE TARGET`: writes a module that says how it was run
    aws.write_text('#!/bin/sh\necho "$4" > "$TMPDIR/fetched"\n'
                   'echo \'import os, sys; print("ran", os.environ["MIRROR_REGISTRY"], sys.argv[1:])\' > "$5"\n')
    aws.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp_path), "MIRROR_REGISTRY": OTHER_REGISTRY,
           "MIRROR_SETUP_BUCKET": "assets", "MIRROR_SETUP_KEY": "abc.py"}
    result = subprocess.run(["sh", "-c", SETUP_LINE], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ran {OTHER_REGISTRY} []\n"
    assert (tmp_path / "fetched").read_text() == "s3://assets/abc.py\n"


@pytest.mark.parametrize("case, why", [
    ("no python3 or aws", "this build image has no python3 or no AWS CLI"),
    ("fetch refused", "could not fetch s3://assets/abc.py"),
    ("setup exits 2", "the setup failed"),
])
@pytest.mark.parametrize("strict", [False, True])
def test_the_setup_line_never_fails_the_build_but_says_in_one_line_why_the_mirror_is_not_set_up(tmp_path, case, why,
                                                                                                strict):
    # Given an image without python3 or the AWS CLI (docker:dind: busybox's sh, nothing else), an object the build
    # cannot fetch, or a setup that ends in an error
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if case != "no python3 or aws":
        (bin_dir / "python3").symlink_to(sys.executable)
        aws = bin_dir / "aws"
        aws.write_text('#!/bin/sh\necho "An error occurred (403) when calling the HeadObject operation" >&2\nexit 1\n'
                       if case == "fetch refused" else '#!/bin/sh\necho "import sys; sys.exit(2)" > "$5"\n')
        aws.chmod(0o755)
    env = {"PATH": str(bin_dir), "TMPDIR": str(tmp_path), "MIRROR_SETUP_BUCKET": "assets", "MIRROR_SETUP_KEY": "abc.py",
           **({"MIRROR_STRICT": "true"} if strict else {})}

    # When the line runs in busybox's sh
    result = subprocess.run(["/bin/busybox", "sh", "-c", SETUP_LINE], env=env, capture_output=True, text=True)

    # Then one line says why; the build goes on unless MIRROR_STRICT=true
    assert result.stdout == f"mirror: not set up: {why}\n"
    assert result.returncode == (1 if strict else 0)
    assert ("403" in result.stderr) == (case == "fetch refused")


def test_the_line_the_manual_gives_for_a_buildspec_file_is_the_setup_line():
    manual = (REPO / "docs" / "adopt.md").read_text()
    section = manual[manual.index("## A buildspec file in the source"):]
    block = section[section.index("```yaml\n") + 8:]
    assert yaml.safe_load(block[:block.index("```")]) == {"phases": {"install": {"commands": [SETUP_LINE]}}}
