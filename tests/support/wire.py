"""Reading a request body off the wire, shared by the loopback proxies (faults, limiter, ptc)."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

CHUNK = 1 << 16


def request_body(handler: BaseHTTPRequestHandler) -> Iterator[bytes]:
    """The request body in pieces, never whole: chunked (RFC 9112 puts it before Content-Length) or sized."""
    rfile = handler.rfile
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        # Chunk extensions after ";" and trailers after the last chunk are read and dropped.
        while size := int(rfile.readline().split(b";")[0].strip() or b"0", 16):
            yield rfile.read(size)
            rfile.readline()
        while rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        return
    left = int(handler.headers.get("Content-Length") or 0)
    while left > 0:
        piece = rfile.read(min(CHUNK, left))
        if not piece:
            return
        left -= len(piece)
        yield piece
