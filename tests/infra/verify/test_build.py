"""`make verify --build`: the CodeBuild project builds a one-line Dockerfile, and a pull that fell back to the
upstream or a failed build is its FAIL line (stacks/verify/build.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from stacks.verify.build import with_dockerfile

from .world import BUILD_ID, BUILDSPEC, FELL_BACK, SERVED, SUMMARY, World, failures, ready, report_line


def test_a_build_whose_pull_fell_back_to_docker_hub_shows_its_report_line(world: World, capsys) -> None:
    line = report_line(world.tmp_path, FELL_BACK)
    ready(world, build=line)

    status, lines = world.run("--build", capsys=capsys)

    assert status == 1
    assert failures(lines) == [f"FAIL  build: FROM python:3.13-slim: {line}"]
    assert "1 fell back to the upstream: docker.io/library/python:3.13-slim" in line


def test_a_failed_build_names_its_phase_and_log(world: World, capsys) -> None:
    world.plan_result(SUMMARY)
    world.rule_answer()
    world.alarm_action(f"Successfully executed action {world.topic}")
    line = report_line(world.tmp_path, SERVED)
    world.build_result(line, status="FAILED")

    status, lines = world.run("--build", capsys=capsys)

    assert status == 1
    assert failures(lines) == [f"FAIL  build: {BUILD_ID} FAILED in BUILD: {line}; log: https://console/x"]


def test_the_build_override_is_the_projects_buildspec_with_a_dockerfile_written_first(tmp_path: Path) -> None:
    override = json.loads(with_dockerfile(BUILDSPEC, "FROM python:3.13-slim"))
    project = json.loads(BUILDSPEC)
    first, *rest = override["phases"]["install"]["commands"]

    assert rest == project["phases"]["install"]["commands"]
    assert {k: v for k, v in override.items() if k != "phases"} == {k: v for k, v in project.items() if k != "phases"}
    subprocess.run(["bash", "-c", first], cwd=tmp_path, check=True)
    assert (tmp_path / "Dockerfile").read_text() == "FROM python:3.13-slim\n"
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-s", "bash", "-"], input=first, text=True, check=True)
