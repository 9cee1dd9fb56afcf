"""`make verify` as a whole: one OK line per check and exit 0 on a working mirror; one line on what to set
without AWS settings; the Makefile's target runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.moto import REGION

from ..conftest import REPO
from ..test_set_token import no_aws
from .world import SERVED, World, ready, report_line


def test_a_working_mirror_is_one_ok_line_per_check_and_exit_0(world: World, capsys) -> None:
    ready(world, build=report_line(world.tmp_path, SERVED, {**SERVED, "reference": "sha256:" + "b" * 64}))

    status, lines = world.run("--build", capsys=capsys)

    assert status == 0, lines
    assert [line.split(":")[0] for line in lines] == [
        "OK    stack", "OK    cache rules", "OK    Docker Hub token", "OK    planner", "OK    images",
        "OK    alarm topic", "OK    build"]
    assert lines[1] == "OK    cache rules: docker-hub authenticates to registry-1.docker.io; quay takes no credentials"
    assert lines[2] == "OK    Docker Hub token: ecr-pullthroughcache/docker-hub holds a token for alice"
    assert "; mirror: 2 manifests served by the mirror (docker.io 2); " in lines[6]
    assert "; no request fell back to the upstream; " in lines[6]
    # The test alarm went to the alarm that was not in ALARM already, and the build got the Dockerfile override.
    alarms = world.client("cloudwatch").describe_alarms(AlarmNames=["EcrMirror-DeadLetters"])["MetricAlarms"]
    assert alarms[0]["StateValue"] == "ALARM"
    assert alarms[0]["StateReason"].startswith("make verify")
    for client in (world.ecr, world.cloudwatch, world.codebuild):
        client.stub.assert_no_pending_responses()


def run_verify(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stacks.verify", "--config", "mirror.yaml"], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=60, check=False)


def test_without_aws_settings_it_is_one_line_saying_what_to_set(tmp_path: Path) -> None:
    no_region = run_verify(no_aws(tmp_path, AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b"))
    no_credentials = run_verify(no_aws(tmp_path, AWS_REGION=REGION))
    unknown_profile = run_verify(no_aws(tmp_path, AWS_PROFILE="nope"))

    assert (no_region.returncode, no_region.stdout) == (1, "")
    assert no_region.stderr.splitlines() == [
        "error: make verify: no AWS region: set AWS_REGION (e.g. AWS_REGION=eu-west-1 make verify) or a profile "
        "with a region (AWS_PROFILE)"]
    assert no_credentials.stderr.splitlines() == [
        "error: make verify: no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"]
    none = tmp_path / "none"
    assert unknown_profile.stderr.splitlines() == [
        f"error: make verify: no AWS profile 'nope' (AWS_PROFILE) in {none} or {none}: name one that "
        "`aws configure list-profiles` shows, or unset AWS_PROFILE"]


def test_make_verify_runs_the_checker_on_its_config_with_its_args() -> None:
    lines = subprocess.run(["make", "-s", "-n", "-C", str(REPO), "verify", "CONFIG=other.yaml", "ARGS=--build"],
                           capture_output=True, text=True, check=False, timeout=60).stdout
    assert "-m stacks.verify --config other.yaml --build" in lines
