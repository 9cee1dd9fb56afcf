"""A custom build image: CodeBuild starts no dockerd in it, the buildspec does (CodeBuild user guide, "Docker in
custom image sample"). Before that, the setup has no daemon and says so in one line; the buildspecs the mirror writes
run it after dockerd is up: MirrorBuildProject(environment_image=...) starts dockerd itself, adoption places the setup
line after the team's own start. Both run here as CodeBuild runs them (codebuild_local), on a real dockerd started by
the buildspec's own command, with this test's paths in place of /usr/local/bin/dockerd and /var/run/docker.sock."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_codebuild as codebuild

from ecr_mirror_cdk.adopt import MirrorAdoption
from ecr_mirror_cdk.buildspec import DOCKERD_START, SETUP_LINE
from tests.build import cfn, codebuild_local
from tests.build.host import Host, needs_dockerd, one_error_line, one_line
from tests.build.test_adopt import MIRROR_MAP, OTHER_REGISTRY, acknowledged, synth_team
from tests.support import dockerd
from tests.support.registry import free_port

# The sample's install commands, its dockerd's log in a file as CodeBuild's own images keep it
# (aws-codebuild-docker-images, dockerd-entrypoint.sh): the local runner waits for the build's output to close,
# which a dockerd writing to it would hold open.
SAMPLE_START = ("nohup /usr/local/bin/dockerd --host=unix:///var/run/docker.sock --host=tcp://127.0.0.1:2375 "
                "--storage-driver=overlay2 > /var/log/docker.log 2>&1 &")
SAMPLE_WAIT = 'timeout 15 sh -c "until docker info; do echo .; sleep 1; done"'
SAMPLE = {"version": "0.2", "phases": {
    "install": {"commands": [SAMPLE_START, SAMPLE_WAIT]},
    "build": {"commands": ["docker pull busybox",
                           """docker run --rm --network none busybox sh -c 'echo "marker=$(cat /etc/marker)"'"""]}}}


def on_this_host(command: str, host: Host, bin_dir: Path) -> str:
    """A buildspec command with this test's daemon in place of the host's: its program (the test's files, vfs),
    socket, TCP port and log."""
    return (command.replace("/usr/local/bin/dockerd", str(host.daemon.program(bin_dir / "dockerd")))
            .replace("unix:///var/run/docker.sock", f"unix://{host.daemon.socket}")
            .replace("127.0.0.1:2375", f"127.0.0.1:{free_port()}")
            .replace("/var/log/docker.log", str(host.daemon.log_path)))


def run_build(spec: dict[str, Any], project_env: dict[str, str], host: Host, tmp_path: Path) -> codebuild_local.Result:
    """The buildspec as CodeBuild runs it on a host with no dockerd yet; `aws s3 cp` fetches the setup archive."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").symlink_to(dockerd.CLIENT)
    aws = bin_dir / "aws"  # `aws s3 cp --quiet SOURCE TARGET`
    aws.write_text(f'#!/bin/sh\necho "$4" >> "{tmp_path}/fetched"\ncp "{host.script}" "$5"\n')
    aws.chmod(0o755)
    phases = {name: {"commands": [on_this_host(c, host, bin_dir) for c in phase["commands"]]}
              for name, phase in spec["phases"].items()}
    env = host.environ | project_env | {"MIRROR_REGISTRY": host.registry.host, "MIRROR_MAP": MIRROR_MAP,
                                        "PATH": f"{bin_dir}:{host.environ['PATH']}", "HOME": str(tmp_path),
                                        "TMPDIR": str(tmp_path)}
    source = tmp_path / "src"
    source.mkdir()
    return codebuild_local.run({"phases": phases}, env, source, timeout=240)


def set_up_dockerd(result: codebuild_local.Result, host: Host) -> int:
    """The PID the setup's line names, which must be the one dockerd running on the host's files."""
    (pid,) = [int(m) for m in re.findall(r"^mirror: dockerd \(pid (\d+)\) and BuildKit", result.output, re.M)]
    assert host.daemon.processes() == [pid]
    return pid


@needs_dockerd
def test_before_the_buildspec_starts_dockerd_the_setup_has_none_and_says_so_in_one_line(host_for):
    # Given a custom image's host before its buildspec has started dockerd
    host = host_for(running=False)
    config = host.daemon.config_path.read_bytes()

    # When the setup runs, as the build runs it and with MIRROR_STRICT=true
    result = host.setup()
    strict = host.setup(MIRROR_STRICT="true")

    # Then one line says where a custom image runs the setup, and nothing is set up; strict stops the build
    message = (f"no Docker daemon listens on unix://{host.daemon.socket} (a custom build image starts dockerd in its "
               "buildspec: run the setup line after that command)")
    assert one_line(result, message), result
    assert host.daemon.config_path.read_bytes() == config and host.set_up_nothing()
    assert host.report() == result.stdout
    assert one_error_line(strict, message), strict.stderr


@needs_dockerd
def test_mirror_build_project_on_a_custom_image_starts_dockerd_then_pulls_through_the_mirror(
        host_for, pipeline_build_app, tmp_path):
    # Given the project's install phase on a custom image (environment_image), on a host with no dockerd running
    spec = cfn.buildspec(pipeline_build_app.data, pipeline_build_app.refs)
    install = spec["phases"]["install"]["commands"]
    assert install[0] == DOCKERD_START and install[-1] == SETUP_LINE
    host = host_for(running=False)

    # When the build runs it, then pulls busybox
    result = run_build({"phases": {"install": {"commands": install}, "build": {"commands": ["docker pull busybox"]}}},
                       cfn.environment(pipeline_build_app.data, pipeline_build_app.refs), host, tmp_path)

    # Then dockerd was started with the documented flags, restarted with the mirror, and busybox came through it
    assert result.returncode == 0, result.output
    pid = set_up_dockerd(result, host)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert f"--host=unix://{host.daemon.socket}" in argv and not any(a.startswith("--storage-driver=") for a in argv)
    assert host.manifest_requests() and host.pulls_busybox_through_the_mirror()
    # and both the buildspec's dockerd and the restarted one wrote to the log it named
    assert host.daemon.log_path.read_text().count(f"API listen on {host.daemon.socket}") == 2


@needs_dockerd
def test_an_adopted_custom_image_project_runs_the_setup_after_its_own_dockerd_start(host_for, tmp_path):
    # Given a team's project on docker:dind whose buildspec starts dockerd as the CodeBuild sample does, adopted
    def custom_image(stack: Stack) -> dict[str, codebuild.Project]:
        project = codebuild.Project(stack, "Custom", build_spec=codebuild.BuildSpec.from_object(SAMPLE),
                                    environment=codebuild.BuildEnvironment(
                                        build_image=codebuild.LinuxBuildImage.from_docker_registry("docker:dind"),
                                        privileged=True))
        Validations.of(project).acknowledge(Acknowledgment(id="AwsSolutions-CB5", reason="The sample's own image."))
        return acknowledged({"Custom": project})

    team = synth_team(tmp_path / "cdk.out", lambda stack, _: MirrorAdoption(
        stack, "Mirror", registry_uri=OTHER_REGISTRY, mirror_map=MIRROR_MAP).adopt_all(stack), custom_image)
    spec = team.spec("Custom")
    assert spec["phases"]["install"]["commands"] == [SAMPLE_START, SAMPLE_WAIT, SETUP_LINE]
    host = host_for(running=False)

    # When the build runs, on a host where nothing runs dockerd but the buildspec
    result = run_build(spec, team.variables("Custom"), host, tmp_path)

    # Then the setup found the daemon the buildspec started, and the build's pulls came through the mirror
    print(result.output)
    assert result.returncode == 0, result.output
    set_up_dockerd(result, host)
    assert "marker=m" in result.output.splitlines()  # /etc/marker of the mirror's busybox
    assert host.manifest_requests()
    variables = team.variables("Custom")
    assert (tmp_path / "fetched").read_text() == \
        f"s3://{variables['MIRROR_SETUP_BUCKET']}/{variables['MIRROR_SETUP_KEY']}\n"
    assert json.loads(host.daemon.config_path.read_text())["registry-mirrors"] == host.mirrors()
