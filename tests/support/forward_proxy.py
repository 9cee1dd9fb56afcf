"""An explicit forward proxy on loopback, as a CodeBuild project in a VPC reaches the internet through (Squid in the
CodeBuild user guide): CONNECT tunnels for HTTPS, absolute-form requests for plain HTTP, optionally only with Basic
Proxy-Authorization. It records every request it was asked, so a test can tell what went through it."""

from __future__ import annotations

import base64
import contextlib
import selectors
import socket
import socketserver
import threading
import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True)
class Asked:
    method: str
    target: str  # host:port for CONNECT, the absolute URL otherwise
    authorized: bool


class ForwardProxy:
    def __init__(self, *, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.asked: list[Asked] = []
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"

    def url(self, credentials: str = "") -> str:
        """`http://[credentials@]127.0.0.1:PORT`, as HTTPS_PROXY holds it."""
        return f"http://{credentials + '@' if credentials else ''}{self.address}"

    def connects(self) -> list[str]:
        return [a.target for a in self.asked if a.method == "CONNECT"]

    def __enter__(self) -> ForwardProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for sock in self._open:  # shutdown wakes the tunnel threads waiting on them; close alone may not
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _authorized(self, head: bytes) -> bool:
        if self.credentials is None:
            return True
        expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        return any(line.split(b":", 1)[1].strip().decode() == expected for line in head.split(b"\r\n")[1:]
                   if line.lower().startswith(b"proxy-authorization:"))

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                client: socket.socket = self.request
                with proxy._lock:
                    proxy._open.append(client)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                method, target, version = head.split(b"\r\n", 1)[0].decode().split(" ")
                authorized = proxy._authorized(head)
                proxy.asked.append(Asked(method, target, authorized))
                if not authorized:
                    client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                   b"Proxy-Authenticate: Basic realm=\"proxy\"\r\nContent-Length: 0\r\n"
                                   b"Connection: close\r\n\r\n")
                    return
                if method == "CONNECT":
                    host, _, port = target.rpartition(":")
                    upstream = socket.create_connection((host, int(port)), timeout=10)
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:  # plain HTTP: the same request, in origin form, to the URL's host
                    url = urllib.parse.urlsplit(target)
                    upstream = socket.create_connection((url.hostname, url.port or 80), timeout=10)
                    lines = head.split(b"\r\n")
                    lines[0] = f"{method} {url.path or '/'}{'?' + url.query if url.query else ''} {version}".encode()
                    upstream.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + rest)
                with proxy._lock:
                    proxy._open.append(upstream)
                with upstream:
                    pipe(client, upstream)

        return Handler


def pipe(one: socket.socket, other: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    with selectors.DefaultSelector() as selector:
        selector.register(one, selectors.EVENT_READ, other)
        selector.register(other, selectors.EVENT_READ, one)
        while True:
            for key, _ in selector.select(timeout=30):
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = source.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
                except OSError:
                    return
