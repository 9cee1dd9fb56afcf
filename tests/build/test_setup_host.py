"""The setup run as the build runs it (the archive builds fetch, saved as setup_mirror.py), against a real dockerd
(tests/support/dockerd.py): a second run, several -H, running containers, a remote daemon, a failed run. A whole
build is in test_end_to_end.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecr_mirror_cdk.setup.daemon import DAEMON_TIMEOUT
from ecr_mirror_cdk.setup.endpoint import endpoint_pid, stop_endpoint
from ecr_mirror_cdk.setup_archive import write_setup_archive
from tests.support import dockerd
from tests.support.busybox import push_busybox
from tests.support.registry import RegistryServer, free_port

needs_dockerd = pytest.mark.skipif(dockerd.available() is not None, reason=str(dockerd.available()))


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

    def setup(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
        environ |= self.daemon.env | {"MIRROR_DAEMON_PIDFILE": str(self.daemon.pidfile),
                                      "MIRROR_ENDPOINT_PIDFILE": str(self.endpoint_pidfile),
                                      "MIRROR_BUILDKIT_CONFIG": str(self.buildkit_config)} | env
        return subprocess.run([sys.executable, str(self.script), "--registry", self.registry.host, *args], env=environ,
                              capture_output=True, text=True, timeout=240)

    def endpoint(self) -> int | None:
        return endpoint_pid(self.endpoint_pidfile)

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


@pytest.fixture(scope="module")
def setup_script(tmp_path_factory) -> Path:
    """The file a build runs: the archive the app uploads, fetched to setup_mirror.py as the setup line does."""
    return write_setup_archive(tmp_path_factory.mktemp("setup") / "setup_mirror.py")


@pytest.fixture
def host_for(registry, tmp_path, setup_script):
    started: list[Host] = []
    push_busybox(registry.host, "docker-hub/library/busybox", "latest", marker="m")

    def start(**options) -> Host:
        host = Host(dockerd.DockerDaemon(**options).start(), registry, setup_script)
        started.append(host)
        return host

    yield start
    for host in started:
        stop_endpoint(host.endpoint_pidfile)
        host.daemon.stop()


def one_error_line(result: subprocess.CompletedProcess[str], message: str) -> bool:
    return (result.returncode == 1 and result.stderr.count("\n") == 1 and result.stderr.startswith("setup_mirror: ")
            and message in result.stderr and "Traceback" not in result.stderr)


@needs_dockerd
@pytest.mark.parametrize("failure", ["the port is taken", "dockerd restarts without the mirror"])
def test_a_second_run_that_fails_leaves_the_first_one_serving(host_for, failure):
    # Given a host the setup has pointed at its endpoint
    host = host_for()
    assert host.setup().returncode == 0
    first, config, daemon_pid = host.endpoint(), host.daemon.config_path.read_bytes(), host.daemon.pid()
    assert first and host.mirrors() and host.pulls_busybox_through_the_mirror()

    # When a second run fails: before binding its port, or after it restarted dockerd
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        if failure == "the port is taken":
            result = host.setup("--port", str(port))
            assert one_error_line(result, f"--port {port}: cannot listen on 127.0.0.1:{port}"), result.stderr
            assert host.daemon.pid() == daemon_pid  # never restarted
        else:  # a daemon.json dockerd does not read: found out only once it has restarted
            result = host.setup("--daemon-config", str(host.daemon.root / "other.json"))
            assert one_error_line(result, "dockerd restarted but does not list the mirror"), result.stderr
            assert not (host.daemon.root / "other.json").exists()

    # Then the first endpoint still serves, named by the pidfile and by daemon.json, and pulls come through it
    assert host.endpoint() == first
    assert host.daemon.config_path.read_bytes() == config
    assert host.mirrors() == json.loads(config)["registry-mirrors"]
    assert host.pulls_busybox_through_the_mirror()


@needs_dockerd
def test_a_daemon_listening_on_several_hosts_is_found_on_its_socket(host_for):
    """CodeBuild's images start dockerd with -H unix:///var/run/docker.sock -H tcp://127.0.0.1:2375."""
    tcp = f"tcp://127.0.0.1:{free_port()}"
    host = host_for(hosts=(tcp,))
    started = time.monotonic()
    result = host.setup(DOCKER_HOST=tcp)  # the client on its TCP port: still this host's daemon
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < DAEMON_TIMEOUT / 2
    assert result.stdout.startswith(f"mirror: dockerd (pid {host.daemon.pid()}) and BuildKit")
    assert host.mirrors() == json.loads(host.daemon.config_path.read_text())["registry-mirrors"]
    assert host.daemon.processes() == [host.daemon.pid()]
    assert host.pulls_busybox_through_the_mirror()


@needs_dockerd
def test_running_containers_keep_running_through_the_restart(host_for):
    # Given a container running before the setup
    host = host_for()
    image = f"{host.registry.host}/docker-hub/library/busybox:latest"
    host.daemon.docker("pull", image)
    container = host.daemon.docker("run", "-d", "--network", "none", image, "busybox", "sleep", "600").stdout.strip()
    before = host.daemon.docker("inspect", "--format", "{{.State.Pid}}", container).stdout

    # When the setup restarts dockerd
    result = host.setup()

    # Then the container is the same process, still running, and the setup says so
    assert result.returncode == 0, result.stderr
    assert host.daemon.docker("inspect", "--format", "{{.State.Running}} {{.State.Pid}}", container).stdout == \
        f"true {before}"
    assert result.stdout.rstrip().endswith("; 1 of 1 running containers kept running through the restart "
                                           "(live-restore)")
    assert json.loads(host.daemon.config_path.read_text())["live-restore"] is True


@needs_dockerd
def test_with_a_remote_daemon_only_buildkit_is_configured_and_no_daemon_is_touched(host_for):
    """A CodeBuild Docker server: DOCKER_HOST names a daemon elsewhere, here a second dockerd on loopback TCP."""
    # Given a local dockerd the setup could restart, and a "remote" one the client talks to
    local = host_for()
    tcp = f"tcp://127.0.0.1:{free_port()}"
    remote = host_for(hosts=(tcp,))
    daemons = [(h.daemon.pid(), h.daemon.config_path.read_bytes()) for h in (local, remote)]

    # When the setup runs with DOCKER_HOST naming the remote one
    result = local.setup(DOCKER_HOST=tcp)

    # Then it prints one line naming what is not covered, and restarts or rewrites no daemon
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith(
        f"mirror: the Docker daemon is remote ({tcp}) and is left as it is: buildx builders")
    assert "not covered: the remote daemon's own pulls (docker pull, docker run" in result.stdout
    assert [(h.daemon.pid(), h.daemon.config_path.read_bytes()) for h in (local, remote)] == daemons
    assert local.endpoint() is None
    # and builders pull straight from ECR's cache prefixes
    registries = tomllib.loads(local.buildkit_config.read_text())["registry"]
    assert registries["docker.io"]["mirrors"] == [f"{local.registry.host}/docker-hub"]
    assert registries["quay.io"]["mirrors"] == [f"{local.registry.host}/quay"]
    assert registries[local.registry.host] == {"http": True}
    assert local.setup("--report").stdout.startswith("mirror: the Docker daemon is remote")


@needs_dockerd
def test_a_failed_run_leaves_exactly_the_daemon_and_the_file_it_found(host_for):
    # Given a dockerd with a socket of its own and a TCP port, and nothing else of its kind running
    host = host_for(hosts=(f"tcp://127.0.0.1:{free_port()}",))
    config = host.daemon.config_path.read_bytes()
    assert host.daemon.processes() == [host.daemon.pid()]

    # When the setup fails after it has restarted dockerd
    started = time.monotonic()
    result = host.setup("--daemon-config", str(host.daemon.root / "other.json"))
    took = time.monotonic() - started

    # Then it says so in one line, without waiting out a timeout on a socket the daemon does not have
    assert one_error_line(result, "dockerd restarted but does not list the mirror"), result.stderr
    assert took < DAEMON_TIMEOUT / 2
    # and leaves one dockerd, started as it was, answering on its socket with its own configuration
    (pid,) = host.daemon.processes()
    assert host.daemon.pid() == pid
    assert host.mirrors() == []
    assert host.daemon.config_path.read_bytes() == config
    assert not (host.daemon.root / "other.json").exists() and not host.buildkit_config.exists()
    # and no endpoint
    assert host.endpoint() is None and not endpoint_processes(host.endpoint_pidfile)


def endpoint_processes(pidfile: Path) -> list[int]:
    marker = str(pidfile).encode()
    return [int(proc.name) for proc in Path("/proc").iterdir()
            if proc.name.isdigit() and marker in read_bytes(proc / "cmdline")]


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
