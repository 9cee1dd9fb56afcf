"""Every host the build may run on: the mirror, or one line and the host as it was. Against a real dockerd
(tests/support/dockerd.py) and registry: a dockerd found by its socket whatever its pidfile, one named by
`tcp://localhost:PORT`, a run without root, registries that refuse, a bad map; and `--strict`/MIRROR_STRICT.
The custom image (no dockerd until the buildspec starts one) is in test_custom_image.py."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.build.host import needs_dockerd, one_error_line, one_line
from tests.support.registry import free_port
from tests.support.token_issuer import TokenIssuer

NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
SYSTEM_PYTHON = "/usr/bin/python3"  # one another user may run (the tests' own may live under /root)


@needs_dockerd
def test_a_dockerd_with_its_pidfile_elsewhere_is_found_by_the_socket_it_listens_on(host_for):
    # Given a dockerd whose pidfile is not /var/run/docker.pid, and nothing telling the setup where it is but the
    # socket the build's client uses (DOCKER_HOST)
    host = host_for()
    assert host.daemon.pidfile.parent == host.daemon.root and "MIRROR_DAEMON_PIDFILE" not in host.environ

    # When the setup runs
    result = host.setup()

    # Then that dockerd is restarted with the mirror, and busybox comes through it
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"mirror: dockerd (pid {host.daemon.pid()}) and BuildKit")
    assert host.daemon.processes() == [host.daemon.pid()]
    assert host.pulls_busybox_through_the_mirror()


@needs_dockerd
def test_a_restarted_dockerd_whose_output_was_not_a_file_writes_to_the_docker_log(host_for):
    # Given a dockerd whose output went nowhere a file (here /dev/null; on a build host, often the build's log)
    host = host_for(log=False)

    # When the setup restarts it
    assert host.setup().returncode == 0

    # Then the new dockerd writes to the log file (/var/log/docker.log on a host), appending
    assert f'API listen on {host.daemon.socket}' in host.dockerd_log.read_text()


@needs_dockerd
def test_tcp_localhost_names_this_hosts_second_dockerd_and_that_one_is_set_up(host_for):
    # Given two dockerds, the second also on a TCP port the build's client names as localhost
    port = free_port()
    first = host_for()
    second = host_for(hosts=(f"tcp://127.0.0.1:{port}",))
    first_before = first.untouched()

    # When the setup runs with DOCKER_HOST=tcp://localhost:PORT
    result = second.setup(DOCKER_HOST=f"tcp://localhost:{port}")

    # Then it is the second dockerd, this host's own, that pulls through the mirror; the first is as it was
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"mirror: dockerd (pid {second.daemon.pid()}) and BuildKit")
    assert second.pulls_busybox_through_the_mirror()
    assert first.untouched() == first_before and first.mirrors() == []


@needs_dockerd
def test_without_root_the_setup_says_root_is_needed_and_changes_nothing(host_for, tmp_path):
    # Given a build whose commands run as another user (buildspec `run-as`), on a dockerd run by root
    host = host_for()
    host.daemon.root.chmod(0o711)  # others may reach the socket's path, as /var/run/docker.sock, not connect
    readable = Path(tempfile.mkdtemp(prefix="setup-", dir="/tmp"))
    try:
        readable.chmod(0o755)
        host.script = Path(shutil.copy(host.script, readable / "setup_mirror.py"))
        before = host.untouched()

        # When the setup runs as that user
        result = host.setup(command=NOBODY, python=SYSTEM_PYTHON, HOME=str(readable))
    finally:
        shutil.rmtree(readable)

    # Then it says what is missing, in one line, and the daemon is as it was
    assert one_line(result, "the setup runs as uid 65534, not root: finding this host's dockerd and restarting it "
                            "need root"), result
    assert "Permission denied" not in result.stdout
    assert host.untouched() == before and host.mirrors() == [] and host.set_up_nothing()


@needs_dockerd
@pytest.mark.parametrize("case", ["unreachable registry", "registry refusing", "malformed map"])
def test_a_host_the_setup_cannot_configure_is_one_line_and_left_as_it_was(host_for, registry_factory, tmp_path,
                                                                           case):
    # Given a running dockerd, and a registry or map the setup cannot use
    host = host_for()
    if case == "unreachable registry":
        args, message = ["--registry", f"127.0.0.1:{free_port()}"], "is unreachable"
    elif case == "registry refusing":  # a registry that wants a token the build does not have
        with TokenIssuer(tmp_path / "issuer") as issuer:  # only its certificate is needed, for the registry to start
            refusing = registry_factory("refusing", auth=issuer.registry_auth())
        args, message = ["--registry", refusing.host], f"registry {refusing.host} answered GET /v2/ with HTTP 401"
    else:
        args, message = ["--map", '{"prefixes": {"docker.io": "Docker Hub"}}'], "--map: prefixes: 'docker.io'"
    before = host.untouched()

    # When the setup runs, as the build runs it and as --strict
    result = host.setup(*args)
    strict = host.setup(*args, "--strict")

    # Then it fails open (one line, exit status 0, nothing changed) and the closing report says so; --strict fails
    assert one_line(result, message), result
    assert result.stdout.rstrip().endswith("this build pulls from the upstream registries as it would without the "
                                           "mirror")
    assert host.untouched() == before and host.mirrors() == [] and host.set_up_nothing()
    assert host.report() == result.stdout
    assert one_error_line(strict, message), strict.stderr
    assert host.untouched() == before
