"""CodeBuild-hosted runner projects (GitHub Actions, GitLab, Buildkite) adopt the mirror through an inline
buildspec's install phase, which CodeBuild runs for jobs labelled buildspec-override:true; and that install phase,
run as CodeBuild runs it on the real dockerd of test_end_to_end.py, points the runner's docker at the mirror."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from aws_cdk import Stack
from aws_cdk import aws_codebuild as codebuild

from ecr_mirror_cdk.adopt import MIRROR_VARIABLES, AdoptionError, MirrorAdoption
from ecr_mirror_cdk.buildspec import SETUP_LINE
from tests.build import cfn, codebuild_local
from tests.build.test_adopt import MIRROR_MAP, PRIVILEGED, TEAM, TeamApp, acknowledged, synth_team
from tests.build.test_end_to_end import REQUIRED, world  # noqa: F401 - the fixture: dockerd, loopback ECR, moto
from tests.support import dockerd
from tests.support.cdk import cdk_app
from tests.support.moto import moto_client

GITHUB_ACTIONS = [codebuild.FilterGroup.in_event_of(codebuild.EventAction.WORKFLOW_JOB_QUEUED)]
RUNNER_SPEC = {"version": "0.2", "phases": {"install": {"commands": [SETUP_LINE]}}}
LABEL = ("MirrorAdoption: a runner project: CodeBuild runs the setup (its install phase) only for jobs labelled "
         "buildspec-override:true")


def github_runner(stack: Stack, *, webhook_filters: Any = GITHUB_ACTIONS,
                  build_spec: codebuild.BuildSpec | None = None) -> codebuild.Project:
    """A GitHub Actions runner project as the CodeBuild user guide sets one up: a webhook for queued workflow jobs."""
    return codebuild.Project(stack, "Runner", environment=PRIVILEGED, build_spec=build_spec,
                             source=codebuild.Source.git_hub(owner="org", repo="app", webhook_filters=webhook_filters))


def buildkite_runner(stack: Stack) -> codebuild.Project:
    """A Buildkite runner project: no source, a webhook building RUNNER_BUILDKITE_BUILD (set on the L1 resource)."""
    project = codebuild.Project(stack, "Runner", environment=PRIVILEGED,
                                build_spec=codebuild.BuildSpec.from_object({"version": "0.2", "phases": {
                                    "pre_build": {"commands": ["buildkite-agent --version"]}}}))
    project.node.default_child.triggers = codebuild.CfnProject.ProjectTriggersProperty(  # type: ignore[union-attr]
        webhook=True, build_type="RUNNER_BUILDKITE_BUILD",
        filter_groups=[[codebuild.CfnProject.WebhookFilterProperty(type="EVENT", pattern="WORKFLOW_JOB_QUEUED")]])
    return project


def adopt_all(stack: Stack, _: dict[str, codebuild.Project]) -> None:
    MirrorAdoption(stack, "Mirror").adopt_all(stack)


def label_lines(team: TeamApp) -> list[str]:
    return [text for level, path, text in team.messages if path == f"/{TEAM}/Runner" and level == "info"]


# --- how a runner project is recognised, and what it gets ---------------------------------------------------------


def test_a_github_actions_runner_without_a_buildspec_gets_an_inline_one_that_runs_the_setup(tmp_path):
    team = synth_team(tmp_path, adopt_all, lambda stack: acknowledged({"Runner": github_runner(stack)}))

    assert team.spec("Runner") == RUNNER_SPEC
    assert list(team.variables("Runner")) == list(MIRROR_VARIABLES)
    assert label_lines(team) == [LABEL]


def test_a_buildkite_runners_inline_buildspec_gets_the_setup_first_and_keeps_its_commands(tmp_path):
    team = synth_team(tmp_path, adopt_all, lambda stack: acknowledged({"Runner": buildkite_runner(stack)}))

    assert team.spec("Runner") == {"version": "0.2", "phases": {
        "install": {"commands": [SETUP_LINE]}, "pre_build": {"commands": ["buildkite-agent --version"]}}}
    assert label_lines(team) == [LABEL]


def test_a_runner_whose_webhook_is_made_elsewhere_is_named_by_adopt(tmp_path):
    def adopt(stack: Stack, projects: dict[str, codebuild.Project]) -> None:
        MirrorAdoption(stack, "Mirror").adopt(projects["Runner"], runner=True)

    team = synth_team(tmp_path, adopt,
                      lambda stack: acknowledged({"Runner": github_runner(stack, webhook_filters=None)}))

    assert team.spec("Runner") == RUNNER_SPEC


def test_without_a_runner_webhook_the_same_project_keeps_the_sources_buildspec_file(tmp_path):
    team = synth_team(tmp_path, adopt_all,
                      lambda stack: acknowledged({"Runner": github_runner(stack, webhook_filters=None)}))

    assert "BuildSpec" not in team.properties("Runner")["Source"]
    (info,) = label_lines(team)
    assert info.startswith("MirrorAdoption: the buildspec is the source's buildspec.yml (CodeBuild's default)")


def test_a_runner_with_a_buildspec_file_is_a_one_line_error():
    stack = Stack(cdk_app(), TEAM)
    project = github_runner(stack, build_spec=codebuild.BuildSpec.from_source_filename("ci/buildspec.yml"))
    with pytest.raises(AdoptionError) as error:
        MirrorAdoption(stack, "Mirror").adopt(project)
    assert str(error.value) == (
        f"{TEAM}/Runner: a runner project with its buildspec in ci/buildspec.yml: CodeBuild runs a runner's "
        "buildspec commands only from an inline buildspec; give it one, or none")


# --- the install phase on a real dockerd -------------------------------------------------------------------------


@pytest.mark.skipif(any(shutil.which(tool) is None for tool in REQUIRED),
                    reason=f"needs {', '.join(REQUIRED)} (.ci/run installs them)")
@pytest.mark.skipif(dockerd.available() is not None, reason=str(dockerd.available()))
@pytest.mark.timeout(300)
def test_a_runners_install_phase_points_the_real_dockerd_at_the_mirror_for_the_jobs_docker_pull(
        world, tmp_path):  # noqa: F811 - the imported fixture
    # Given a GitHub Actions runner project adopted in the mirror's account, as cdk deploy would publish it
    team = synth_team(tmp_path / "cdk.out", adopt_all, lambda stack: acknowledged({"Runner": github_runner(stack)}))
    contract = {"/ecr-mirror/registry-uri": world.ecr.host, "/ecr-mirror/mirror-map": MIRROR_MAP,
                "/ecr-mirror/home-registry-uri": world.ecr.host}  # in the home region: the registry itself
    refs = {k: contract[p["Default"]] for k, p in team.data["Parameters"].items() if p.get("Default") in contract}
    variables = {v["Name"]: cfn.resolve(v["Value"], refs)
                 for v in team.properties("Runner")["Environment"]["EnvironmentVariables"]}
    key, module = team.asset()
    s3 = moto_client("s3", world.env["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket=variables["MIRROR_SETUP_BUCKET"])
    s3.upload_file(str(module), variables["MIRROR_SETUP_BUCKET"], key)
    source = tmp_path / "src"
    source.mkdir()
    assert "registry-mirrors" not in json.loads(world.daemon.config_path.read_text())  # a host as CodeBuild starts it

    # When CodeBuild runs the runner's buildspec (the job itself runs in BUILD, after it)
    result = codebuild_local.run(team.spec("Runner"), {**world.env, **variables, "HOME": str(tmp_path)}, source)

    # Then the daemon pulls through the mirror: the job's docker pull comes from the loopback ECR, not Docker Hub
    assert result.returncode == 0, result.output
    assert "mirror: dockerd (pid " in result.output
    mirrors = json.loads(world.daemon.docker("info", "--format", "{{json .RegistryConfig.Mirrors}}").stdout)
    assert [m.rstrip("/") for m in mirrors] == json.loads(world.daemon.config_path.read_text())["registry-mirrors"]
    before = len(world.ecr.manifest_gets("docker-hub/library/busybox"))
    world.daemon.docker("rmi", "-f", "busybox", check=False)
    world.daemon.docker("pull", "busybox")
    assert len(world.ecr.manifest_gets("docker-hub/library/busybox")) > before
    assert [r for r in world.hub.requests() if "/manifests/" in r.path] == []
