"""A real Docker daemon (Debian's docker.io) for tests: its own data, exec root, socket and pidfile.

Started as CodeBuild's images start theirs, then driven with Debian's /usr/bin/docker client (the other
docker CLI on some machines has no buildx, so its `docker build` fails). No network for containers
(`--bridge=none`, run them with `--network none`). Needs root, as dockerd does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ecr_mirror_cdk.setup.base import gone

DOCKERD = "/usr/sbin/dockerd"
CLIENT = "/usr/bin/docker"


def available() -> str | None:
    """None if a daemon can run here, else why not."""
    if os.geteuid() != 0:
        return "dockerd needs root"
    missing = [path for path in (DOCKERD, CLIENT, "/bin/busybox") if not Path(path).exists()]
    return f"missing {', '.join(missing)} (.ci/run installs docker.io and busybox-static)" if missing else None


class DockerDaemon:
    def __init__(self, config: dict | None = None, *, hosts: tuple[str, ...] = (), log: bool = True,
                 environ: dict[str, str] | None = None) -> None:
        """`hosts`: more `-H` addresses after its own unix socket (as CodeBuild's images add tcp://127.0.0.1:2375);
        `log`: its output to `log_path`, else to /dev/null (as a dockerd whose output is not a file);
        `environ`: more variables for the daemon's environment (HTTPS_PROXY, ...), not the client's."""
        # Short paths: a unix socket path must fit in 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="dockerd-", dir="/tmp"))
        self.config_path = self.root / "daemon.json"
        self.config_path.write_text(json.dumps(config or {}))
        self.pidfile = self.root / "docker.pid"
        self.socket = self.root / "docker.sock"
        self.log_path = self.root / "dockerd.log"
        self.log = log
        # Everything but where it listens: its own files under root, and what runs in this sandbox.
        self.own_flags = ["--config-file", str(self.config_path), "--data-root", str(self.root / "data"),
                          "--exec-root", str(self.root / "exec"), "--pidfile", str(self.pidfile),
                          "--storage-driver", "vfs", "--iptables=false", "--ip6tables=false", "--bridge=none"]
        self.argv = [DOCKERD, *self.own_flags, "-H", f"unix://{self.socket}",
                     *(arg for host in hosts for arg in ("-H", host))]
        self.environ = {**os.environ, **(environ or {})}

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(self.root / "client")}

    def start(self) -> DockerDaemon:
        with self.log_path.open("ab") as log:
            output = log if self.log else subprocess.DEVNULL
            subprocess.Popen(self.argv, env=self.environ, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                             start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.docker("version", check=False).returncode == 0:
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dockerd did not start: {self.log_path.read_text()[-2000:]}")

    def program(self, path: Path) -> Path:
        """An executable `dockerd` at `path` that a buildspec can start with its own flags (`--host=...`): this
        daemon's files and sandbox flags, and vfs in place of the storage driver it names (no overlay2 here)."""
        path.write_text("#!/bin/sh\n"
                        'for arg; do shift; case "$arg" in --storage-driver=*) ;; *) set -- "$@" "$arg";; esac; done\n'
                        f"exec {DOCKERD} {' '.join(self.own_flags)} \"$@\"\n")
        path.chmod(0o755)
        return path

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([CLIENT, *args], env={**os.environ, **self.env}, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {result.stderr.strip()}")
        return result

    def processes(self) -> list[int]:
        """Every dockerd running on this daemon's files: one, unless something started another."""
        return [pid for pid, argv in self._own() if Path(argv[0]).name == "dockerd"]

    def _own(self) -> list[tuple[int, list[str]]]:
        """Every process whose command line names this daemon's root: dockerd, its containerd, their shims."""
        marker = str(self.root).encode()
        found = []
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes()
                if proc.name.isdigit() and marker in cmdline:
                    found.append((int(proc.name), [arg.decode() for arg in cmdline.split(b"\0")[:-1]]))
        return found

    def stop(self) -> None:
        """Stop everything this daemon started: its containers first (live-restore would keep them, and their
        containerd shims, running after dockerd exits), every dockerd on its files whatever PID it has now, then
        whatever of its containerd and shims is left, with the processes under them."""
        if self.docker("version", check=False, timeout=30).returncode == 0:
            containers = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
            if containers:
                self.docker("rm", "-f", *containers, check=False, timeout=60)
        for pid in {*self.processes(), *filter(None, [self.pid()])}:
            terminate(pid)
        leftovers = [pid for pid, _ in self._own()]
        for pid in [*descendants(leftovers), *leftovers]:
            terminate(pid)
        for mounted in ("exec", "data"):  # dockerd mounts both; one it did not unmount would stay behind
            subprocess.run(["umount", "-R", str(self.root / mounted)], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        if not gone(pid, 30):
            os.kill(pid, signal.SIGKILL)
            gone(pid, 5)
    except ProcessLookupError:
        pass


def descendants(pids: list[int]) -> list[int]:
    """Every process under `pids`, deepest first (a container's processes under its shim)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if proc.name.isdigit():
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(proc.name))
    found: list[int] = []
    todo = list(pids)
    while todo:
        below = children.get(todo.pop(), [])
        found[:0] = below
        todo += below
    return found
