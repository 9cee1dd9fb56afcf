"""Docker Hub on loopback, for a real dockerd: where its Docker Hub pulls land when they skip the mirror.

dockerd's Docker Hub endpoint is fixed (`https://registry-1.docker.io`, moby registry/config.go
DefaultV2Registry), so the stand-in sits where dockerd's own settings can send it: dockerd reaches registries
through `HTTPS_PROXY` (moby registry/registry.go NewTransport: `Proxy: http.ProxyFromEnvironment`), and trusts
the certificates of `SSL_CERT_FILE` (Go crypto/x509 on Linux). `DockerHub.env` is those two for the daemon's
environment: the proxy answers `CONNECT registry-1.docker.io:443` with TLS for that name, then relays the
requests to a plain loopback registry, whose access log shows what dockerd pulled "from Docker Hub".
Loopback addresses never go through the proxy (Go's httpproxy: "localhost" and loopback IPs are not proxied),
so the mirror endpoint and loopback registries are reached directly.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import subprocess
import threading
from pathlib import Path

from tests.support.registry import RegistryServer

HOST = "registry-1.docker.io"


def certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (subjectAltName: Go checks no common name), and its key."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class DockerHub:
    """A CONNECT proxy on 127.0.0.1 that serves `registry-1.docker.io` from `registry` (plain HTTP, loopback)."""

    def __init__(self, registry: RegistryServer, directory: Path) -> None:
        self.registry = registry
        self.cert, key = certificate(directory, HOST)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(self.cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.tunnels: list[str] = []  # each CONNECT's target, in order
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def env(self) -> dict[str, str]:
        """For the daemon's environment (not the client's)."""
        port = self.listener.getsockname()[1]
        return {"HTTPS_PROXY": f"http://127.0.0.1:{port}", "SSL_CERT_FILE": str(self.cert)}

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._tunnel, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            target = head.split(b" ", 2)[1].decode(errors="replace") if head.startswith(b"CONNECT ") else ""
            self.tunnels.append(target)
            if target != f"{HOST}:443":
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            try:
                with self.context.wrap_socket(client, server_side=True) as tls, \
                        socket.create_connection(("127.0.0.1", self.registry.port), timeout=30) as upstream:
                    relay(tls, upstream, self._stopped)
            except (OSError, ssl.SSLError):
                return


def relay(tls: ssl.SSLSocket, plain: socket.socket, stopped: threading.Event) -> None:
    """Bytes both ways until either side closes (one thread: an SSL object is not to be read and written at once)."""
    while not stopped.is_set():
        readable = [tls] if tls.pending() else select.select([tls, plain], [], [], 0.5)[0]
        for source in readable:
            data = source.recv(65536)
            if not data:
                return
            (plain if source is tls else tls).sendall(data)
