"""What adoption makes of a team's own buildspec and escape-hatch overrides: adopted as written, or one synth line
naming the project and the key. In-process synths with cdk-nag on, as in test_adopt.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import Stack, Validations
from aws_cdk import aws_codebuild as codebuild
from cdk_nag import AwsSolutionsChecks

from ecr_mirror_cdk.adopt import MIRROR_VARIABLES, AdoptionError, MirrorAdoption
from ecr_mirror_cdk.adopt_buildspec import added, setup_position
from ecr_mirror_cdk.buildspec import SETUP_LINE, SETUP_PLACE
from tests.build.test_adopt import PRIVILEGED, TEAM, acknowledged, synth_team
from tests.support.cdk import cdk_app

# The team's own buildspec, as it would write it in an escape-hatch override.
TEAM_YAML = ("version: 0.2\nphases:\n  install:\n    commands:\n      - npm ci\n"
             "  build:\n    commands:\n      - make image\n")


def yaml_project(stack: Stack, text: str) -> codebuild.Project:
    """A project whose buildspec is YAML text the team wrote, set on the L1 resource as CloudFormation takes it."""
    project = codebuild.Project(stack, "Team", build_spec=codebuild.BuildSpec.from_object({"version": "0.2"}),
                                environment=PRIVILEGED)
    cfn = project.node.default_child
    cfn.source = codebuild.CfnProject.SourceProperty(type="NO_SOURCE", build_spec=text)  # type: ignore[union-attr]
    acknowledged({"Team": project})
    return project


def failed_synth(outdir: Path, stack_of: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Synthesize an app that must fail validation: the MirrorAdoption violations, and the template as written."""
    app = cdk_app(outdir)
    stack = Stack(app, TEAM)
    stack_of(stack)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((outdir / "validation-report.json").read_text())
    (adoption,) = [r for r in report["pluginReports"] if r["pluginName"] == "MirrorAdoption"]
    template = json.loads((outdir / f"{TEAM}.template.json").read_text())
    (project,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::CodeBuild::Project"]
    return adoption["violations"], project


def names(properties: dict[str, Any]) -> list[str]:
    return [v["Name"] for v in properties["Environment"]["EnvironmentVariables"]]


# --- escape-hatch overrides (issue 19, point 8) ---------------------------------------------------------------


@pytest.mark.parametrize("override_first", [True, False], ids=["override-then-adopt", "adopt-then-override"])
def test_a_buildspec_override_keeps_the_teams_commands_and_synth_names_the_line_to_add(tmp_path, override_first):
    def team(stack: Stack) -> None:
        project = acknowledged({"Inline": codebuild.Project(
            stack, "Inline", build_spec=codebuild.BuildSpec.from_object({"version": "0.2"}), environment=PRIVILEGED)})
        override = lambda: project["Inline"].node.default_child.add_property_override(  # noqa: E731
            "Source.BuildSpec", TEAM_YAML)
        if override_first:
            override()
        MirrorAdoption(stack, "Mirror").adopt(project["Inline"])
        if not override_first:
            override()

    violations, project = failed_synth(tmp_path, team)

    assert project["Source"]["BuildSpec"] == TEAM_YAML  # their install and build commands, as they wrote them
    assert names(project)[:4] == list(MIRROR_VARIABLES[:4])
    (violation,) = violations
    assert violation["ruleName"] == "Source.BuildSpec"
    assert violation["description"] == (
        f"{TEAM}/Inline: an override of Source.BuildSpec does not run the setup line: make this {SETUP_PLACE}: "
        f"{SETUP_LINE}")


def test_a_variables_override_keeps_the_teams_variables_and_synth_names_the_ones_it_drops(tmp_path):
    theirs = [{"Name": "TEAM", "Type": "PLAINTEXT", "Value": "api"}]

    def team(stack: Stack) -> None:
        project = acknowledged({"Inline": codebuild.Project(
            stack, "Inline", build_spec=codebuild.BuildSpec.from_object({"version": "0.2"}), environment=PRIVILEGED)})
        project["Inline"].node.default_child.add_property_override("Environment.EnvironmentVariables", theirs)
        MirrorAdoption(stack, "Mirror").adopt_all(stack)

    violations, project = failed_synth(tmp_path, team)

    assert project["Environment"]["EnvironmentVariables"] == theirs
    (violation,) = violations
    assert violation["description"] == (
        f"{TEAM}/Inline: an override of Environment.EnvironmentVariables drops MIRROR_REGISTRY, MIRROR_MAP, "
        "MIRROR_SETUP_BUCKET, MIRROR_SETUP_KEY, MIRROR_HOME_REGISTRY: add MirrorAdoption.variables to it")


def test_overrides_that_carry_the_setup_line_and_the_adoptions_variables_synthesize_as_written(tmp_path):
    theirs = [{"Name": "TEAM", "Type": "PLAINTEXT", "Value": "api"}]
    with_setup = TEAM_YAML.replace("      - npm ci\n", f"      - {json.dumps(SETUP_LINE)}\n      - npm ci\n")

    def adopt(stack: Stack, projects: dict[str, codebuild.Project]) -> None:
        adoption = MirrorAdoption(stack, "Mirror")
        cfn = projects["Inline"].node.default_child
        cfn.add_property_override("Source.BuildSpec", with_setup)  # type: ignore[union-attr]
        cfn.add_property_override("Environment.EnvironmentVariables",  # type: ignore[union-attr]
                                  [*theirs, *adoption.variables])
        adoption.adopt(projects["Inline"])

    team = synth_team(tmp_path, adopt, lambda stack: acknowledged({"Inline": codebuild.Project(
        stack, "Inline", build_spec=codebuild.BuildSpec.from_object({"version": "0.2"}), environment=PRIVILEGED)}))

    properties = team.properties("Inline")
    assert properties["Source"]["BuildSpec"] == with_setup
    assert names(properties) == ["TEAM", *MIRROR_VARIABLES]


def test_overrides_of_other_keys_apply_on_top_of_the_adopted_project(same_account_with_overrides):
    properties = same_account_with_overrides.properties("Inline")
    assert properties["Environment"]["ComputeType"] == "BUILD_GENERAL1_LARGE"
    assert properties["Environment"]["EnvironmentVariables"][0] == {"Name": "TEAM", "Type": "PLAINTEXT",
                                                                    "Value": "overridden"}
    assert names(properties) == ["TEAM", *MIRROR_VARIABLES]
    assert same_account_with_overrides.spec("Inline")["phases"]["install"]["commands"] == [SETUP_LINE]
    assert properties["TimeoutInMinutes"] == 30


@pytest.fixture
def same_account_with_overrides(tmp_path):
    """Overrides CDK merges into the rendered resource: a key of Environment, one variable by index, a property."""
    def projects(stack: Stack) -> dict[str, codebuild.Project]:
        project = codebuild.Project(
            stack, "Inline", build_spec=codebuild.BuildSpec.from_object({"version": "0.2"}), environment=PRIVILEGED,
            environment_variables={"TEAM": codebuild.BuildEnvironmentVariable(value="web")})
        cfn = project.node.default_child
        cfn.add_property_override("Environment.ComputeType", "BUILD_GENERAL1_LARGE")  # type: ignore[union-attr]
        cfn.add_property_override("Environment.EnvironmentVariables.0.Value", "overridden")  # type: ignore[union-attr]
        cfn.add_property_override("TimeoutInMinutes", 30)  # type: ignore[union-attr]
        return acknowledged({"Inline": project})

    return synth_team(tmp_path, lambda stack, _: MirrorAdoption(stack, "Mirror").adopt_all(stack), projects)


# --- buildspec shapes and values (points 9 to 11) ---------------------------------------------------------------


def test_yaml_dates_yes_and_numbers_keep_the_text_the_team_wrote(tmp_path):
    text = ("version: 0.2\nenv:\n  variables:\n    BUILD_DATE: 2024-01-01\n    LEGACY: yes\n    VERSION: 1.10\n"
            "    PORT: 8080\n    MODE: 0755\nphases:\n  build:\n    commands:\n      - make\n")

    team = synth_team(tmp_path, lambda stack, projects: MirrorAdoption(stack, "Mirror").adopt(projects["Team"]),
                      lambda stack: {"Team": yaml_project(stack, text)})

    assert team.spec("Team") == {
        "version": 0.2,
        "env": {"variables": {"BUILD_DATE": "2024-01-01", "LEGACY": "yes", "VERSION": "1.10", "PORT": 8080,
                              "MODE": "0755"}},
        "phases": {"install": {"commands": [SETUP_LINE]}, "build": {"commands": ["make"]}},
    }


BAD_SPECS = [
    ("version: 0.2\nphases:\n  install:\n    commands: npm ci\n",
     'phases.install.commands is a string, not a list of commands (write commands: ["..."])'),
    ("version: 0.2\nphases:\n  install: npm ci\n", "phases.install is a string, not a mapping"),
    ("version: 0.2\nphases:\n  - install\n", "phases is a list, not a mapping"),
    ("version: 0.2\nphases:\n  install:\n    commands:\n      - echo a: b\n",
     "phases.install.commands[0] is a mapping, not a command (quote it: YAML reads 'a: b' as a mapping)"),
    ("version: 0.2\nenv:\n  variables:\n    MIRROR_REGISTRY: 111122223333.dkr.ecr.us-east-1.amazonaws.com\n",
     "env.variables.MIRROR_REGISTRY is set in the buildspec; adoption sets it on the project (remove it from the "
     "buildspec)"),
    ("version: 0.2\nenv:\n  parameter-store:\n    MIRROR_MAP: /team/map\n",
     "env.parameter-store.MIRROR_MAP is set in the buildspec; adoption sets it on the project (remove it from the "
     "buildspec)"),
    ("version: 0.2\n---\nphases:\n  build:\n    commands: [make]\n",
     "the inline buildspec holds 2 YAML documents; CodeBuild reads one"),
    ("version: 0.2\nphases:\n\tbuild:\n\t\tcommands: [make]\n",
     "the inline buildspec is not valid YAML: found character '\\t' that cannot start any token at line 3, column 1"),
]


@pytest.mark.parametrize("text, message", BAD_SPECS, ids=[
    "commands-string", "install-string", "phases-list", "command-mapping", "mirror-variable", "mirror-parameter",
    "documents", "tabs"])
def test_a_buildspec_adoption_cannot_edit_is_one_line_naming_the_project_and_the_key(text, message):
    stack = Stack(cdk_app(), TEAM)
    project = yaml_project(stack, text)
    with pytest.raises(AdoptionError) as error:
        MirrorAdoption(stack, "Mirror").adopt(project)
    assert str(error.value) == f"{TEAM}/Team: {message}"


def test_the_aspect_leaves_such_a_project_as_it_was_with_one_info_line(tmp_path):
    text, message = BAD_SPECS[2]

    team = synth_team(tmp_path, lambda stack, _: MirrorAdoption(stack, "Mirror").adopt_all(stack),
                      lambda stack: {"Team": yaml_project(stack, text)})

    assert team.properties("Team")["Source"]["BuildSpec"] == text
    assert "EnvironmentVariables" not in team.properties("Team")["Environment"]
    assert [m for m in team.messages if m[1] == f"/{TEAM}/Team"] == [
        ("info", f"/{TEAM}/Team", f"MirrorAdoption: not adopted: {message}")]


@pytest.mark.parametrize("text", ['{"version": "0.2", "phases": {"build": {"commands": ["make"]}}}',
                                  "---\nversion: 0.2\n", "phases:\n  build:\n    commands: [make]\n"])
def test_inline_text_is_told_from_a_file_name_one_line_json_and_an_explicit_document_start_included(tmp_path, text):
    team = synth_team(tmp_path, lambda stack, projects: MirrorAdoption(stack, "Mirror").adopt(projects["Team"]),
                      lambda stack: {"Team": yaml_project(stack, text)})
    assert team.spec("Team")["phases"]["install"]["commands"] == [SETUP_LINE]


# --- where the setup line goes: after a custom image's own dockerd start ----------------------------------------

SAMPLE_START = ("nohup /usr/local/bin/dockerd --host=unix:///var/run/docker.sock --host=tcp://127.0.0.1:2375 "
                "--storage-driver=overlay2&")  # CodeBuild user guide, "Docker in custom image sample"
SAMPLE_WAIT = 'timeout 15 sh -c "until docker info; do echo .; sleep 1; done"'


@pytest.mark.parametrize("commands, at", [
    (["npm ci"], 0),  # a managed image: CodeBuild started dockerd before the build
    ([SAMPLE_START, SAMPLE_WAIT, "npm ci"], 2),
    (["apk add python3", SAMPLE_START, "sleep 5", "docker version", "npm ci"], 4),
    (["dockerd-entrypoint.sh &", "npm ci"], 1),  # docker:dind's own script
    (["if ! docker info; then sudo -E /usr/bin/dockerd > /var/log/dockerd.log 2>&1 & fi", SAMPLE_WAIT], 2),
    (["service docker start", "npm ci"], 1),
    (["dockerd --version", "which dockerd", "cat /var/log/dockerd.log", "pkill dockerd", "echo start dockerd"], 0),
])
def test_the_setup_line_goes_after_the_last_command_that_starts_dockerd_and_its_wait(commands, at):
    spec = added({"version": "0.2", "phases": {"install": {"commands": commands}, "build": {"commands": ["make"]}}},
                 SETUP_LINE)
    assert spec["phases"]["install"]["commands"] == [*commands[:at], SETUP_LINE, *commands[at:]]
    assert setup_position(commands) == at
    assert spec["phases"]["build"] == {"commands": ["make"]}
