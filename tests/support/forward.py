"""A byte relay to a unix socket: a Docker daemon reached through another program, as a CodeBuild Docker server is
over TCP, or a socket mounted from another host. No dockerd holds the relay's socket, so the setup must take the
daemon behind it for one that is not this host's own."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path


class Forwarder:
    """Listens on 127.0.0.1 (any free port), or on the unix socket `unix` if given; relays every connection to the
    unix socket `target`. Runs in threads of the test process; `stop()` closes everything."""

    def __init__(self, target: Path, *, unix: Path | None = None) -> None:
        self.target = target
        if unix is None:
            self.listener = socket.create_server(("127.0.0.1", 0))
            self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        else:
            self.listener = socket.socket(socket.AF_UNIX)
            self.listener.bind(str(unix))
            self.listener.listen()
            self.address = f"unix://{unix}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # stopped
            upstream = socket.socket(socket.AF_UNIX)
            try:
                upstream.connect(str(self.target))
            except OSError:
                client.close()
                continue
            self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
