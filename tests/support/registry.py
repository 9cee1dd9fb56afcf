"""Debian's docker-registry (the CNCF distribution registry) run on loopback for tests."""

from __future__ import annotations

import re
import secrets
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BINARY = "docker-registry"
_ACCESS = re.compile(r'^\S+ - \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) ')


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RegistryServer:
    """One registry process: plain HTTP on 127.0.0.1, storage and log under `root`.

    `proxy` turns it into a pull-through cache of another registry (the distribution
    registry's proxy mode); `auth` is a distribution `auth:` section (htpasswd or token);
    `redirect_to` makes blob GETs redirect there (serve `data_dir` at that URL, as S3 would).
    `tls` (certificate, key) serves HTTPS, on the address `hostname` resolves to and named by it.
    """

    def __init__(self, root: Path, *, proxy: dict[str, Any] | None = None,
                 auth: dict[str, Any] | None = None, name: str = "registry",
                 redirect_to: str | None = None, tls: tuple[Path, Path] | None = None,
                 hostname: str = "127.0.0.1") -> None:
        self.root = Path(root)
        self.name = name
        self.port = free_port()
        self.host = f"{hostname}:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self.tls = tls
        self.log_path = self.root / f"{name}.log"
        self.data_dir = self.root / f"{name}-data"
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.data_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": f"{socket.gethostbyname(hostname)}:{self.port}", "secret": secrets.token_hex(16)},
        }
        if tls:
            config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
        if proxy:
            config["proxy"] = proxy
        if auth:
            config["auth"] = auth
        if redirect_to:
            # Blob GETs answer 307 to redirect_to + the storage path, as ECR answers with S3 URLs.
            config["middleware"] = {"storage": [{"name": "redirect", "options": {"baseurl": redirect_to}}]}
        self.config_path = self.root / f"{name}.yml"
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RegistryServer:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([BINARY, "serve", str(self.config_path)], stdout=log, stderr=log)
        # Straight to the registry, whatever proxy the test's environment names; trusting its own certificate.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(
            context=ssl.create_default_context(cafile=self.tls[0]) if self.tls else None))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{BINARY} exited: {self.log_path.read_text()[-2000:]}")
            try:
                opener.open(f"{self.url}/v2/", timeout=1)
                return self
            except urllib.error.HTTPError:
                return self  # 401 from an auth-enabled registry still means it is up
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{BINARY} did not start on {self.host}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests(self) -> list[Request]:
        """Every request the access log recorded so far, oldest first."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = _ACCESS.match(line)
            if match:
                out.append(Request(match["method"], match["path"], int(match["status"])))
        return out

    def manifest_gets(self, repository: str | None = None) -> list[Request]:
        """Manifest GETs: what Docker Hub counts as pulls."""
        pattern = re.compile(rf"^/v2/{re.escape(repository) if repository else '.+'}/manifests/[^/?]+")
        return [r for r in self.requests() if r.method == "GET" and pattern.match(r.path)]
