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
    def __init__(self, config: dict | None = None, *, hosts: tuple[str, ...] = (),
                 environ: dict[str, str] | None = None) -> None:
        """`hosts`: more `-H` addresses after its own unix socket (as CodeBuild's images add tcp://127.0.0.1:2375);
        `environ`: more variables for the daemon's environment (HTTPS_PROXY, ...), not the client's."""
        # Short paths: a unix socket path must fit in 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="dockerd-", dir="/tmp"))
        self.config_path = self.root / "daemon.json"
        self.config_path.write_text(json.dumps(config or {}))
        self.pidfile = self.root / "docker.pid"
        self.socket = self.root / "docker.sock"
        self.log_path = self.root / "dockerd.log"
        self.argv = [DOCKERD, "--config-file", str(self.config_path), "--data-root", str(self.root / "data"),
                     "--exec-root", str(self.root / "exec"), "--pidfile", str(self.pidfile),
                     "-H", f"unix://{self.socket}", "--storage-driver", "vfs", "--iptables=false",
                     "--ip6tables=false", "--bridge=none", *(arg for host in hosts for arg in ("-H", host))]
        self.environ = {**os.environ, **(environ or {})}

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(self.root / "client")}

    def start(self) -> DockerDaemon:
        with self.log_path.open("ab") as log:
            subprocess.Popen(self.argv, env=self.environ, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.docker("version", check=False).returncode == 0:
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dockerd did not start: {self.log_path.read_text()[-2000:]}")

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
        """Every dockerd running with this daemon's command line: one, unless something started another."""
        found = []
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if proc.name.isdigit() and (proc / "cmdline").read_bytes().split(b"\0")[:-1] == \
                        [arg.encode() for arg in self.argv]:
                    found.append(int(proc.name))
        return found

    def stop(self) -> None:
        """Stop every dockerd of this root, whatever the pidfile names now (a restart gives it a new PID)."""
        for pid in {*self.processes(), *filter(None, [self.pid()])}:
            try:
                os.kill(pid, signal.SIGTERM)
                if not gone(pid, 30):
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["umount", "-R", str(self.root / "exec")], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
