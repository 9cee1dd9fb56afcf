"""A build host for the setup's tests: a real dockerd (tests/support/dockerd.py), the mirror's registry holding
busybox, and the setup archive run as a build runs it (saved as setup_mirror.py). The fixtures are in conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecr_mirror_cdk.setup.endpoint import endpoint_pid, state_files
from tests.support import dockerd
from tests.support.registry import RegistryServer


@dataclass
class Host:
    """A build host: its dockerd, the mirror's registry holding busybox, and the setup's files."""

    daemon: dockerd.DockerDaemon
    registry: RegistryServer
    script: Path  # the setup archive, as the setup line saves it

    @property
    def endpoint_pidfile(self) -> Path:
        return self.daemon.root / "mirror-endpoint.pid"

    @property
    def buildkit_config(self) -> Path:
        return self.daemon.root / "buildkitd.toml"

    @property
    def dockerd_log(self) -> Path:
        """Where the setup sends a restarted dockerd's output when it was not a file (/var/log/docker.log on a host)."""
        return self.daemon.root / "docker.log"

    @property
    def environ(self) -> dict[str, str]:
        """The build's environment: this host's socket as DOCKER_HOST, the setup's files under the daemon's root."""
        environ = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
        return environ | self.daemon.env | {"MIRROR_ENDPOINT_PIDFILE": str(self.endpoint_pidfile),
                                            "MIRROR_BUILDKIT_CONFIG": str(self.buildkit_config),
                                            "MIRROR_DOCKERD_LOG": str(self.dockerd_log)}

    def setup(self, *args: str, command: tuple[str, ...] = (), python: str = sys.executable,
              **env: str) -> subprocess.CompletedProcess[str]:
        """The setup with `--registry` this host's registry; `command` goes before python3 (setpriv, say)."""
        return subprocess.run([*command, python, str(self.script), "--registry", self.registry.host, *args],
                              env=self.environ | env, capture_output=True, text=True, timeout=240)

    def endpoint(self) -> int | None:
        return endpoint_pid(self.endpoint_pidfile)

    def report(self) -> str:
        return subprocess.run([sys.executable, str(self.script), "--report"], env=self.environ, capture_output=True,
                              text=True, timeout=60).stdout

    def untouched(self) -> tuple[int | None, bytes, list[int]]:
        """What a run that sets nothing up leaves as it was: dockerd's PID, daemon.json's bytes, every dockerd."""
        return self.daemon.pid(), self.daemon.config_path.read_bytes(), self.daemon.processes()

    def set_up_nothing(self) -> bool:
        """No endpoint, no BuildKit configuration, no record but the line for --report."""
        state = state_files(self.endpoint_pidfile)
        return (self.endpoint() is None and not self.buildkit_config.exists() and not state["remote"].exists()
                and not state["journal"].exists())

    def mirrors(self) -> list[str]:
        info = self.daemon.docker("info", "--format", "{{json .RegistryConfig.Mirrors}}").stdout
        return [m.rstrip("/") for m in json.loads(info) or []]

    def pulls_busybox_through_the_mirror(self) -> bool:
        """`docker pull busybox` succeeds (Docker Hub is unreachable here) and the mirror's registry was asked."""
        self.daemon.docker("rmi", "-f", "busybox", check=False)
        before = len(self.manifest_requests())
        if self.daemon.docker("pull", "busybox", check=False).returncode != 0:
            return False
        deadline = time.monotonic() + 5  # the registry logs a request once it has answered it
        while len(self.manifest_requests()) == before:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def manifest_requests(self) -> list[str]:
        """GET or HEAD: dockerd asks a tag it has seen with HEAD, then only the layers it lacks."""
        prefix = "/v2/docker-hub/library/busybox/manifests/"
        return [r.path for r in self.registry.requests() if r.path.startswith(prefix)]


def one_line(result: subprocess.CompletedProcess[str], message: str) -> bool:
    """Failed open: exit status 0, and one line on stdout, `mirror: not set up: ...` with `message` in it."""
    return (result.returncode == 0 and result.stdout.count("\n") == 1 and result.stdout.startswith(
        "mirror: not set up: ") and message in result.stdout and result.stderr == "")


def one_error_line(result: subprocess.CompletedProcess[str], message: str) -> bool:
    """--strict: exit status 1, and one line on stderr, `setup_mirror: ...` with `message` in it."""
    return (result.returncode == 1 and result.stderr.count("\n") == 1 and result.stderr.startswith("setup_mirror: ")
            and message in result.stderr and "Traceback" not in result.stderr)


needs_dockerd = pytest.mark.skipif(dockerd.available() is not None, reason=str(dockerd.available()))
