"""A fault-injecting HTTP proxy on loopback, in front of a test registry.

Rules match a method and a path regex and fire a number of times: reset the connection before
reading a request, drop it halfway through a response body, corrupt a byte of it, answer a status
of our choosing (5xx, or 429 with Retry-After), or replace a manifest with malformed JSON. The
Host header passes through, so the registry's Location headers point back at the proxy.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.wire import CHUNK, request_body

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


@dataclass
class Fault:
    # "drop" | "corrupt" | "status" | "malformed" | "headers" (add `headers` to the response)
    # | "reset" (close the connection at once, without reading the request body)
    action: str
    path: str  # regex searched in the request path
    method: str = "GET"
    times: int = 1  # how many matching requests it affects; negative: every one
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"errors":[{"code":"INJECTED"}]}'  # what "status" answers
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        live = self.times < 0 or self.fired < self.times
        return live and self.method in (method, "*") and re.search(self.path, path) is not None


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    status: int
    fault: str | None


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream  # host:port of the registry behind
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def add(self, action: str, path: str, **options: Any) -> Fault:
        fault = Fault(action, path, **options)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.fired += 1
                    return fault
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                self._relay()

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815

            def _relay(self) -> None:
                fault = proxy._take(self.command, self.path)
                if fault and fault.action == "reset":
                    self._record(0, fault)
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return None
                if fault and fault.action == "status":
                    for _ in request_body(self):
                        pass
                    return self._reply(fault.status, fault.headers, fault.body, fault)
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    chunked = "Content-Length" not in self.headers and self.headers.get(
                        "Transfer-Encoding", "").lower() == "chunked"
                    for name, value in self.headers.items():
                        if name.lower() not in _HOP:
                            upstream.putheader(name, value)
                    if chunked:
                        body = b"".join(request_body(self))
                        upstream.putheader("Content-Length", str(len(body)))
                        upstream.endheaders(body)
                    else:
                        upstream.endheaders()
                        for piece in request_body(self):
                            upstream.send(piece)
                    response = upstream.getresponse()
                    self._respond(response, fault)
                finally:
                    upstream.close()

            def _respond(self, response: http.client.HTTPResponse, fault: Fault | None) -> None:
                headers = {k: v for k, v in response.getheaders() if k.lower() not in _HOP}
                if fault and fault.action == "headers":
                    headers.update(fault.headers)
                length = response.getheader("Content-Length")
                if self.command == "HEAD" or response.status in (204, 304):
                    return self._reply(response.status, headers, None, fault)
                if length is None or (fault and fault.action == "malformed"):
                    body = response.read()
                    if fault and fault.action == "malformed":
                        body = body[: len(body) // 2] or b"{"
                        headers["Docker-Content-Digest"] = "sha256:" + hashlib.sha256(body).hexdigest()
                    headers.pop("Content-Length", None)
                    return self._reply(response.status, headers, body, fault)
                self._record(response.status, fault)
                self.send_response(response.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                total, sent, first = int(length), 0, True
                while True:
                    piece = response.read(CHUNK)
                    if not piece:
                        break
                    if fault and fault.action == "corrupt" and first:
                        piece = bytes([piece[0] ^ 0xFF]) + piece[1:]
                    first = False
                    if fault and fault.action == "drop" and sent + len(piece) >= total // 2:
                        self.wfile.write(piece[: max(total // 2 - sent, 0)])
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    self.wfile.write(piece)
                    sent += len(piece)

            def _reply(self, status: int, headers: dict[str, str], body: bytes | None, fault: Fault | None) -> None:
                self._record(status, fault)  # before answering, so the client never outruns the record
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() != "content-length" or body is None:
                        self.send_header(name, value)
                if body is not None:
                    self.send_header("Content-Length", str(len(body)))
                elif "Content-Length" not in headers:
                    self.send_header("Content-Length", "0")
                self.end_headers()
                if body and self.command != "HEAD":
                    self.wfile.write(body)

            def _record(self, status: int, fault: Fault | None) -> None:
                with proxy._lock:
                    proxy.seen.append(Seen(self.command, self.path, status, fault.action if fault else None))

        return Handler
