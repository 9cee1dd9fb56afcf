"""The setup run as the build runs it (the archive builds fetch, saved as setup_mirror.py), against a real dockerd
(tests/support/dockerd.py, the `host_for` fixture): a second run, several -H, running containers, a remote daemon,
a failed run. Hosts the setup cannot configure are in test_setup_fail_open.py; a whole build in test_end_to_end.py."""

from __future__ import annotations

import json
import socket
import time
import tomllib
from pathlib import Path

import pytest

from ecr_mirror_cdk.setup.daemon import DAEMON_TIMEOUT
from tests.build.host import needs_dockerd, one_error_line, one_line
from tests.support.forward import Forwarder
from tests.support.registry import free_port


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
            assert one_line(result, f"--port {port}: cannot listen on 127.0.0.1:{port}"), result
            assert host.daemon.pid() == daemon_pid  # never restarted
        else:  # a daemon.json dockerd does not read: found out only once it has restarted
            result = host.setup("--daemon-config", str(host.daemon.root / "other.json"))
            assert one_line(result, "dockerd restarted but does not list the mirror"), result
            assert not (host.daemon.root / "other.json").exists()

    # Then it says the first run's mirror stays, which still serves, named by the pidfile and by daemon.json
    assert result.stdout.rstrip().endswith("; what an earlier run of this build set up stays as it was")
    assert host.report().startswith("mirror: ") and "not set up" not in host.report()
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
@pytest.mark.parametrize("relay", ["tcp", "unix"])
def test_with_a_remote_daemon_only_buildkit_is_configured_and_no_daemon_is_touched(host_for, relay):
    """A CodeBuild Docker server: DOCKER_HOST names a daemon elsewhere (over TCP), or a socket no dockerd of this
    host holds (one mounted from another host); here a second dockerd reached through a relay."""
    # Given a local dockerd the setup could restart, and a "remote" one the client talks to through a relay
    local = host_for()
    remote = host_for()
    forwarder = Forwarder(remote.daemon.socket, unix=local.daemon.root / "relay.sock" if relay == "unix" else None)
    tcp = forwarder.address
    daemons = [(h.daemon.pid(), h.daemon.config_path.read_bytes()) for h in (local, remote)]

    # When the setup runs with DOCKER_HOST naming the remote one
    try:
        assert remote.daemon.docker("-H", tcp, "version", "--format", "{{.Server.Version}}").stdout.strip()
        result = local.setup(DOCKER_HOST=tcp)
    finally:
        forwarder.stop()

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

    # When the setup, told to fail rather than go on without the mirror, fails after it has restarted dockerd
    started = time.monotonic()
    result = host.setup("--daemon-config", str(host.daemon.root / "other.json"), MIRROR_STRICT="true")
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
