"""`make adoption-report`: each CodeBuild project of a region as adopted, adoptable or manual, against moto server
(ListProjects' nextToken and BatchGetProjects' 100-name limit, which moto does not enforce, with botocore's Stubber)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.stub import Stubber

from ecr_mirror_cdk.adopt_buildspec import with_setup
from ecr_mirror_cdk.buildspec import SETUP_LINE
from stacks.adoption_report import main
from tests.support.moto import REGION, fake_aws_environment, moto_client, moto_server

from .conftest import REPO
from .test_set_token import no_aws

ROLE = "arn:aws:iam::123456789012:role/service-role/team-build"
SPEC = {"version": "0.2", "phases": {"build": {"commands": ["docker build -t app ."]}}}
MIRROR = [{"name": name, "value": f"/ecr-mirror/{key}", "type": "PARAMETER_STORE"} for name, key in (
    ("MIRROR_REGISTRY", "registry-uri"), ("MIRROR_MAP", "mirror-map"),
    ("MIRROR_SETUP_BUCKET", "setup-bucket"), ("MIRROR_SETUP_KEY", "setup-key"))]


def create(client: Any, name: str, *, buildspec: str = "", privileged: bool = True,
           variables: list[dict[str, str]] | None = None) -> None:
    source = {"type": "GITHUB", "location": f"https://github.com/team/{name}.git"}
    client.create_project(
        name=name, source={**source, **({"buildspec": buildspec} if buildspec else {})},
        artifacts={"type": "NO_ARTIFACTS"}, serviceRole=ROLE,
        environment={"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0",
                     "computeType": "BUILD_GENERAL1_SMALL", "privilegedMode": privileged,
                     "environmentVariables": [{"name": "TEAM", "value": "web"}, *(variables or [])]})


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        client = moto_client("codebuild", url)
        # As MirrorAdoption leaves a project: the variables, and the setup line first in install.
        create(client, "api", buildspec=with_setup(json.dumps(SPEC), SETUP_LINE), variables=MIRROR)
        create(client, "web", buildspec=yaml.safe_dump(SPEC))
        create(client, "half", buildspec=json.dumps(SPEC), variables=MIRROR)
        create(client, "legacy", buildspec="ci/buildspec.yml")
        create(client, "recipe", variables=MIRROR)  # the manual's recipe, with CodeBuild's default buildspec.yml
        create(client, "lint", buildspec=yaml.safe_dump(SPEC), privileged=False)
        yield url


def report(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # The venv's Node 24 first on PATH, as make puts it: the report imports the CDK, which starts Node.
    env = {**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "stacks.adoption_report", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120, check=False)


def test_each_project_is_one_line_adopted_adoptable_or_manual_then_a_summary(endpoint: str) -> None:
    result = report(fake_aws_environment(endpoint), "--region", REGION)

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "adopted    api",
        "adoptable  half    inline buildspec, privileged: add the setup line (MirrorAdoption does both)",
        f"manual     legacy  buildspec file ci/buildspec.yml: add as the first install command: {SETUP_LINE}; and set "
        "MIRROR_REGISTRY, MIRROR_MAP, MIRROR_SETUP_BUCKET, MIRROR_SETUP_KEY",
        "manual     lint    not privileged: the setup restarts dockerd, which CodeBuild runs only in privileged mode",
        "manual     recipe  buildspec file buildspec.yml (CodeBuild's default): add as the first install command: "
        f"{SETUP_LINE}",
        "adoptable  web     inline buildspec, privileged: set MIRROR_REGISTRY, MIRROR_MAP, MIRROR_SETUP_BUCKET, "
        "MIRROR_SETUP_KEY and add the setup line (MirrorAdoption does both)",
        f"6 CodeBuild projects in {REGION}: 1 adopted, 2 adoptable, 3 manual",
    ]


def test_the_region_comes_from_aws_region_and_another_region_has_its_own_projects(endpoint: str) -> None:
    env = fake_aws_environment(endpoint)
    here = report(env)
    elsewhere = report({**env, "AWS_REGION": "eu-west-1"})

    assert here.stdout.splitlines()[-1] == f"6 CodeBuild projects in {REGION}: 1 adopted, 2 adoptable, 3 manual"
    assert elsewhere.stdout.splitlines() == ["0 CodeBuild projects in eu-west-1: 0 adopted, 0 adoptable, 0 manual"]


def test_missing_aws_settings_are_the_one_line_the_deploy_check_gives(tmp_path: Path) -> None:
    no_region = report(no_aws(tmp_path, AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b"))
    no_credentials = report(no_aws(tmp_path, AWS_REGION=REGION))

    assert (no_region.returncode, no_region.stdout, no_region.stderr) == (1, "", (
        "error: make adoption-report: no AWS region: set AWS_REGION (e.g. AWS_REGION=eu-west-1 make adoption-report) "
        "or a profile with a region (AWS_PROFILE)\n"))
    assert (no_credentials.returncode, no_credentials.stderr) == (1, (
        "error: make adoption-report: no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY\n"))


def test_an_api_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    client = boto3.client("codebuild", region_name=REGION, aws_access_key_id="a", aws_secret_access_key="b")
    with Stubber(client) as stub:
        stub.add_client_error("list_projects", "AccessDeniedException", "not authorized to perform ListProjects")
        status = main([], client=client)

    assert (status, capsys.readouterr()) == (1, (
        "", "error: make adoption-report: AccessDeniedException: not authorized to perform ListProjects\n"))


def test_projects_are_listed_page_by_page_and_described_100_at_a_time(capsys: pytest.CaptureFixture[str]) -> None:
    names = [f"p{n:03d}" for n in range(150)]
    client = boto3.client("codebuild", region_name=REGION, aws_access_key_id="a", aws_secret_access_key="b")

    def described(chunk: list[str]) -> dict[str, Any]:
        return {"projects": [{"name": name, "source": {"type": "NO_SOURCE", "buildspec": json.dumps(SPEC)},
                              "environment": {"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0",
                                              "computeType": "BUILD_GENERAL1_SMALL", "privilegedMode": True}}
                             for name in chunk]}

    with Stubber(client) as stub:  # the order of calls and their parameters are asserted
        stub.add_response("list_projects", {"projects": names[:120], "nextToken": "page-2"}, {})
        stub.add_response("batch_get_projects", described(names[:100]), {"names": names[:100]})
        stub.add_response("batch_get_projects", described(names[100:120]), {"names": names[100:120]})
        stub.add_response("list_projects", {"projects": names[120:]}, {"nextToken": "page-2"})
        stub.add_response("batch_get_projects", described(names[120:]), {"names": names[120:]})
        status = main([], client=client)
        stub.assert_no_pending_responses()

    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert [line.split()[1] for line in lines[:-1]] == names
    assert lines[-1] == f"150 CodeBuild projects in {REGION}: 0 adopted, 150 adoptable, 0 manual"


def test_make_adoption_report_runs_the_report_with_its_arguments() -> None:
    lines = subprocess.run(["make", "-s", "-n", "-C", str(REPO), "adoption-report", "ARGS=--region eu-west-1"],
                           capture_output=True, text=True, check=False, timeout=60).stdout
    assert "-m stacks.adoption_report --region eu-west-1" in lines
