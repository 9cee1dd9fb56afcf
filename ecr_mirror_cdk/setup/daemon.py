"""This host's dockerd (found by locate.py): its command line as /proc shows it, its daemon.json, restarting it
exactly as it was started, and live-restore."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .base import SetupError, end, gone, is_loopback, load_json, read_text
from .locate import DEFAULT_SOCKET

DAEMON_TIMEOUT = 60.0
# Where a restarted dockerd writes when its own output did not go to a file (a pipe to the build log, /dev/null):
# the file CodeBuild's images send it to (aws-codebuild-docker-images, dockerd-entrypoint.sh).
DOCKERD_LOG = Path("/var/log/docker.log")


def daemon_config(path: Path, endpoint_url: str, *, live_restore: bool = False) -> tuple[str | None, str]:
    """(the file's current text or None, the text with our mirror first); SetupError if it is not a JSON object."""
    old = read_text(path)
    try:
        data = load_json(old) if old and old.strip() else {}
    except ValueError as err:
        raise SetupError(f"{path}: not valid JSON ({err}); fix it or pass --daemon-config") from None
    if not isinstance(data, dict):
        raise SetupError(f"{path}: must hold a JSON object")
    others = [m for m in data.get("registry-mirrors") or [] if isinstance(m, str) and not is_loopback_url(m)]
    data["registry-mirrors"] = [endpoint_url, *others]
    if live_restore:
        data["live-restore"] = True
    return old, json.dumps(data, indent=2) + "\n"


def is_loopback_url(url: str) -> bool:
    return is_loopback(url.split("://", 1)[-1].rstrip("/"))


class UnixConnection(http.client.HTTPConnection):
    """HTTP over dockerd's unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def daemon_get(api: str, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    """GET on the daemon's API (`unix:///path`, or plain `tcp://127.0.0.1:PORT`): its answer and body; OSError or
    HTTPException when it does not answer."""
    scheme, _, where = api.partition("://")
    connection = UnixConnection(where) if scheme == "unix" else http.client.HTTPConnection(where, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def docker_api(api: str, path: str) -> str | None:
    """The body of a GET on the daemon's API; None unless it answers 200."""
    try:
        response, body = daemon_get(api, path)
    except (OSError, http.client.HTTPException):
        return None
    return body.decode(errors="replace") if response.status == 200 else None


@dataclass(frozen=True)
class Process:
    pid: int
    argv: list[str]
    environ: dict[str, str]
    cwd: str

    @classmethod
    def read(cls, pid: int, proc: Path = Path("/proc")) -> Process:
        """The process as /proc shows it (its environment and directory are root's to read)."""
        where = proc / str(pid)
        try:
            argv = (where / "cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
            environ = dict(item.split("=", 1) for item in
                           (where / "environ").read_bytes().rstrip(b"\0").decode().split("\0") if "=" in item)
            return cls(pid, argv, environ, os.readlink(where / "cwd"))
        except PermissionError:
            raise SetupError(f"the setup runs as uid {os.geteuid()}, not root: restarting dockerd (pid {pid}) "
                             "needs root") from None
        except (OSError, ValueError) as err:
            raise SetupError(f"dockerd (pid {pid}) cannot be read from /proc: {err}") from None


def parse_flags(args: list[str]) -> list[tuple[str, str]]:
    """dockerd's `--flag value`, `--flag=value`, `-H value` and `-Hvalue` pairs, in order, repeats kept
    (boolean flags pair with the next flag harmlessly; dockerd takes no positional arguments)."""
    pairs = []
    for index, arg in enumerate(args):
        if not arg.startswith("-"):
            continue
        name, eq, value = arg.partition("=")
        if not arg.startswith("--") and len(name) > 2:  # a shorthand with its value attached (spf13/pflag)
            name, eq, value = name[:2], "=", arg[2:].lstrip("=")
        if not eq and index + 1 < len(args) and not args[index + 1].startswith("-"):
            value = args[index + 1]
        pairs.append((name, value))
    return pairs


def config_file(flags: list[tuple[str, str]]) -> Path:
    """The daemon.json dockerd reads: its last --config-file, else the default."""
    return Path(([value for name, value in flags if name == "--config-file"] or ["/etc/docker/daemon.json"])[-1])


def daemon_hosts(flags: list[tuple[str, str]], config_file: Path) -> list[str]:
    """Every address dockerd listens on: each -H/--host, else daemon.json's "hosts", else the default socket."""
    hosts = [value for name, value in flags if name in ("-H", "--host")]
    if not hosts:
        with contextlib.suppress(SetupError, ValueError):
            data = load_json(read_text(config_file) or "{}")
            if isinstance(data, dict) and isinstance(data.get("hosts"), list):
                hosts = [host for host in data["hosts"] if isinstance(host, str)]
    return [host if host.endswith("://") else host.rstrip("/") for host in hosts] or [DEFAULT_SOCKET]


def local_api(hosts: list[str], tls: bool) -> str:
    """Where to ask dockerd: its first unix socket, else plain TCP on loopback."""
    systemd = [host for host in hosts if host.startswith("fd://")]
    if systemd:
        # A socket systemd passed in (socket activation) is not there for a dockerd the setup starts itself.
        raise SetupError(f"dockerd was started by systemd with -H {systemd[0]}: the setup cannot restart it with its "
                         "sockets; set registry-mirrors in its daemon.json and `systemctl restart docker` instead")
    for host in hosts:
        if host.startswith("unix://") and len(host) > len("unix://"):
            return host
    for host in hosts:
        if host.startswith("tcp://") and is_loopback(host[len("tcp://"):]) and not tls:
            return host
    raise SetupError(f"dockerd listens on {', '.join(hosts)}: the setup needs a unix socket or plain TCP on "
                     "loopback to check it")


@dataclass(frozen=True)
class Daemon:
    """A running dockerd, as /proc shows it: enough to start it again exactly as it was started."""

    process: Process
    config_path: Path
    api: str
    live_restore_flag: bool  # --live-restore on its command line: the file must not set it as well
    output: Path  # where it writes: its own stdout if that is a file, else DOCKERD_LOG

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def of(cls, process: Process, config_override: Path | None = None, log: Path = DOCKERD_LOG) -> Daemon:
        """The dockerd `process`, if the setup can restart it; SetupError saying why not otherwise."""
        flags = parse_flags(process.argv[1:])
        names = {name for name, _ in flags}
        if "--registry-mirror" in names:
            raise SetupError("dockerd was started with --registry-mirror; daemon.json cannot also set registry-mirrors")
        own_config = config_file(flags)
        tls = any(name in ("--tls", "--tlsverify") and value.lower() != "false" for name, value in flags)
        api = local_api(daemon_hosts(flags, own_config), tls)
        output = log
        with contextlib.suppress(OSError):
            target = Path(os.readlink(f"/proc/{process.pid}/fd/1"))
            output = target if target.is_absolute() and target.is_file() else log
        return cls(process, config_override or own_config, api, "--live-restore" in names, output)

    def stop(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not gone(pid, DAEMON_TIMEOUT):
            raise SetupError(f"dockerd (pid {pid}) did not stop within {DAEMON_TIMEOUT:.0f} s")

    def start(self) -> int:
        """Start dockerd with the command line, environment and directory it had; its PID once it answers.

        A dockerd that does not come up is stopped again: a failed start leaves no daemon of ours behind.
        """
        process = self.process
        with self._output() as output:
            started = subprocess.Popen(process.argv, env=process.environ, cwd=process.cwd, stdin=subprocess.DEVNULL,
                                       stdout=output, stderr=output, start_new_session=True)
        try:
            self._wait_for(started)
        except BaseException:
            end(started.pid, DAEMON_TIMEOUT)
            raise
        return started.pid

    def _output(self) -> IO[bytes]:
        """Its log file, appended to; /dev/null only if that cannot be opened."""
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            return self.output.open("ab")
        except OSError:
            return open(os.devnull, "ab")  # noqa: SIM115 - closed by start's `with`

    def _wait_for(self, started: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + DAEMON_TIMEOUT
        while time.monotonic() < deadline:
            if started.poll() is not None:
                raise SetupError(f"dockerd exited with status {started.returncode} when started again")
            if docker_api(self.api, "/_ping") == "OK":  # the dockerd it replaced has ended: this is the one
                return
            time.sleep(0.1)
        raise SetupError(f"dockerd did not answer on {self.api} within {DAEMON_TIMEOUT:.0f} s")

    def info(self) -> dict[str, object]:
        with contextlib.suppress(ValueError):
            info = load_json(docker_api(self.api, "/info") or "{}")
            if isinstance(info, dict):
                return info
        return {}

    def mirrors(self) -> list[str]:
        config = self.info().get("RegistryConfig")
        mirrors = config.get("Mirrors") if isinstance(config, dict) else None
        return [m.rstrip("/") for m in mirrors or [] if isinstance(m, str)]

    def running_containers(self) -> int:
        with contextlib.suppress(ValueError):
            containers = load_json(docker_api(self.api, "/containers/json") or "[]")
            return len(containers) if isinstance(containers, list) else 0
        return 0

    def live_restore_refusal(self) -> str | None:
        """Why running containers cannot stay up through a restart (dockerd's live-restore), or None if they can."""
        if self.live_restore_flag:
            return "dockerd was started with --live-restore=false, which daemon.json cannot override"
        swarm = self.info().get("Swarm")
        if isinstance(swarm, dict) and swarm.get("LocalNodeState") not in (None, "", "inactive"):
            # moby daemon/config isSwarmCompatible: "--live-restore daemon configuration is incompatible with swarm
            # mode"; the cluster component then does not start.
            return "live-restore is incompatible with swarm mode"
        return None

    def reload_live_restore(self) -> bool:
        """SIGHUP reloads live-restore from the file (moby daemon/reload.go, reloadLiveRestore); whether it took."""
        os.kill(self.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.info().get("LiveRestoreEnabled") is True:
                return True
            time.sleep(0.1)
        return False
