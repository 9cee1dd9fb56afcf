"""The mirror endpoint on 127.0.0.1: the request handler, serving, and the background process a setup starts.

Why an endpoint on loopback and not ECR itself: ECR serves Docker Hub under `<registry>/v2/docker-hub/...`, and
dockerd cannot be pointed there. Before Docker 25 it refuses a mirror URL with a path (moby
registry.ValidateMirror); since Docker 25 it accepts one (moby PR 46594, "registry: allow mirror path prefix in
config", commit c587ba3) but puts the path before `/v2/`: ValidateMirror adds a `/` and distribution's URLBuilder
resolves `v2/...` against it, so `https://<registry>/docker-hub` is asked for `/docker-hub/v2/library/python/...`,
which ECR does not serve. The endpoint answers Docker Hub's paths (`/v2/library/python/manifests/3.12-slim`)
from the mirror's repositories, authenticates to ECR itself (`aws ecr get-login-password`, so the daemon needs no
credentials), and passes ECR's blob redirects (layer GETs answer 307 to S3) to the client instead of bytes.
BuildKit reaches the other upstreams through the same endpoint under a path (`127.0.0.1:PORT/quay.io`), which
BuildKit accepts since v0.12.0 (moby/buildkit PR 3427; v0.11 puts the path before `/v2` and falls back to the
upstream, and the report says so), then ECR's own prefix, then the upstream.

When the mirror cannot serve a manifest the endpoint answers with the mirror's error, and dockerd and
BuildKit fall back to the upstream registry; every request answered with an error is recorded, and `--report`
says it.

In a replica region (`--registry` the local copy), `--home-registry` names the mirror's home registry: what
replication has not brought yet (an image first pulled here, a tag that moved minutes ago) comes from there,
whose cache rules can still fill it, instead of from the upstream. ECR replicates, but a cache rule exists
only in its own region (ECR user guide, "Private image replication"; docs/organization.md, "Other regions").
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from .base import SetupError, alive, end
from .ecr import Registry, Response
from .mirror_map import MirrorMap, refusal

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
])
PASSED_HEADERS = ("Content-Type", "Content-Length", "Docker-Content-Digest", "Location", "Etag")
_ROUTE = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<reference>[^/]+)")
# BuildKit before v0.12 sends a path mirror's path before /v2 (`/quay.io/v2/org/app/...`): it cannot use them.
_PATH_FIRST = re.compile(r"/[^/]+\.[^/]+/v2/")
# The endpoint runs in the background from the code this run is: the checkout, installed package or .pyz archive
# that holds this package goes first on sys.path (a build's source folder, the working directory, may hold
# another copy of ecr_mirror_cdk). Within an archive __file__ is `<archive>/ecr_mirror_cdk/setup/endpoint.py`.
CODE_ROOT = Path(os.path.abspath(__file__)).parents[2]
SERVE = (f"import sys; sys.path.insert(0, sys.argv.pop(1)); from {__package__}.cli import main; "
         "sys.exit(main())")


class Journal:
    """One JSON line per manifest served, and per request answered with an error (fell back, or refused)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, **entry: object) -> None:
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self._lock, self.path.open("a") as out:
            out.write(line)


def error_reason(status: int, body: bytes) -> str:
    """`404 MANIFEST_UNKNOWN`, from the registry's error body when it has one (OCI distribution spec)."""
    if 300 <= status < 400:
        return f"{status} redirect, not followed for a manifest"
    try:
        errors = json.loads(body)["errors"]
        code = str(errors[0].get("code") or "")
        message = str(errors[0].get("message") or "")[:120]
        return " ".join(part for part in (str(status), code, message and f"({message})") if part)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        return str(status)


def printable(path: str) -> str:
    """A request path as the journal and the report show it: ASCII, short."""
    return path.encode("ascii", "backslashreplace").decode()[:200]


def handler(registry: Registry, mirror: MirrorMap, journal: Journal,
            home: Registry | None = None) -> type[http.server.BaseHTTPRequestHandler]:
    sources = [registry] if home is None else [registry, home]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "ecr-mirror-endpoint"
        # Headers and body go out in two writes: without TCP_NODELAY each reply waits for the client's delayed
        # ACK (socketserver.StreamRequestHandler's flag; measured on loopback: 46 ms a manifest GET, 2 ms with it).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass  # the journal records what matters; paths may carry nothing secret, but keep CI logs short

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.serve()

        def do_HEAD(self) -> None:  # noqa: N802
            self.serve()

        def do_POST(self) -> None:  # noqa: N802
            self.refuse(405, "UNSUPPORTED", "pull only")

        do_PUT = do_PATCH = do_DELETE = do_POST  # noqa: N815

        def serve(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/v2", "/v2/"):
                return self.reply(200, b"{}", {"Content-Type": "application/json"})
            if not path.isascii():
                return self.refuse(400, "NAME_INVALID", "the path is not ASCII")
            match = _ROUTE.fullmatch(path)
            if not match:
                return self.refuse(404, "UNSUPPORTED", "not a pull path of the registry API")
            name, kind, reference = match["name"], match["kind"], match["reference"]
            refused = refusal(kind, name, reference)
            if refused:
                return self.refuse(*refused)
            upstream, repo, candidates = mirror.route(name)
            # Clients may send several Accept headers (containers/image does); a registry that sees only a part may
            # answer with a schema it must convert, or refuse (distribution: 400 MANIFEST_INVALID).
            accept = ", ".join(self.headers.get_all("Accept") or []) or MANIFEST_ACCEPT
            headers = {"Accept": accept} if kind == "manifests" else {}
            if "Range" in self.headers:
                headers["Range"] = self.headers["Range"]
            reasons = []
            for source in sources:
                # A blob comes from the registry that served its manifest: the local one answers 404 for it first.
                where = f"{source.host}/" if home is not None else ""
                for repository in candidates:
                    try:
                        response = source.request(self.command, f"/v2/{repository}/{kind}/{reference}", headers)
                    except (OSError, http.client.HTTPException, SetupError) as err:
                        reasons.append(f"{where}{repository}: unreachable ({err})")
                        continue
                    # A blob's redirect is ECR sending the client to S3; a manifest is served only with its bytes.
                    if response.status < 300 or (response.status < 400 and kind == "blobs"):
                        if kind == "manifests":
                            journal.record(served=True, method=self.command, upstream=upstream, image=repo,
                                           reference=reference, repository=repository,
                                           **({"home": True} if source is home else {}))
                        return self.relay(response)
                    reasons.append(f"{where}{repository}: {error_reason(response.status, response.read())}")
            if not candidates:
                reasons.append(f"the mirror holds nothing of {upstream}")
            journal.record(served=False, method=self.command, kind=kind, upstream=upstream, image=repo,
                           reference=reference, reason="; ".join(reasons))
            message = json.dumps({"errors": [{"code": "NOT_MIRRORED", "message": "; ".join(reasons)}]})
            self.reply(404, message.encode())

        def refuse(self, status: int, code: str, message: str) -> None:
            """Answer with an error before anything is sent upstream, and record it for the report."""
            path = printable(self.path.split("?", 1)[0])
            journal.record(served=False, method=self.command, path=path, reason=f"{status} {code} ({message})",
                           **({"path_first": True} if _PATH_FIRST.match(path) else {}))
            self.reply(status, json.dumps({"errors": [{"code": code, "message": message}]}).encode())

        def relay(self, response: Response) -> None:
            self.send_response(response.status)
            for name in PASSED_HEADERS:
                value = response.getheader(name)
                if value is not None:
                    self.send_header(name, value)
            length = response.getheader("Content-Length")
            if length is None and self.command == "GET":
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command == "HEAD":
                response.read()
                return
            while chunk := response.read(1 << 20):
                self.wfile.write(chunk)

        def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            for name, value in (headers or {"Content-Type": "application/json"}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


class Server(http.server.ThreadingHTTPServer):
    """A thread per connection; an error in one is one line in the endpoint's log, not socketserver's traceback."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        error = sys.exc_info()[1]
        client = ":".join(str(part) for part in client_address) if isinstance(client_address, tuple) else "a client"
        if isinstance(error, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            line = f"{client} dropped the connection mid-request ({type(error).__name__})"
        else:
            line = f"a request from {client} failed: {type(error).__name__}: {error}"
        print(f"setup_mirror: endpoint: {' '.join(line.split())[:300]}", file=sys.stderr, flush=True)


def serve(listener: socket.socket, registry: Registry, mirror: MirrorMap, journal: Journal,
          home: Registry | None = None) -> None:
    server = Server(listener.getsockname(), handler(registry, mirror, journal, home), bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


def listen(port: int) -> socket.socket:
    """127.0.0.1:port for the endpoint, bound before anything is stopped or changed."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
    except OSError as err:
        listener.close()
        raise SetupError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({err.strerror}); choose another "
                         "port, or leave --port out for any free one") from None
    return listener


def start_endpoint(args: argparse.Namespace, listener: socket.socket, *, fresh: bool) -> int:
    """Hand the bound socket to a background copy of this script; its PID (the pidfile is written on success)."""
    state = state_files(args.endpoint_pidfile)
    state["journal"].parent.mkdir(parents=True, exist_ok=True)
    if fresh:  # an endpoint still running from an earlier run of this build keeps its record
        state["journal"].write_text("")
    with state["log"].open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(CODE_ROOT), "--serve", "--registry", args.registry, "--map", args.map,
             "--endpoint-pidfile", str(args.endpoint_pidfile), "--listen-fd", str(listener.fileno()),
             *(["--home-registry", args.home_registry] if args.home_registry else [])],
            pass_fds=[listener.fileno()], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    listener.close()
    return process.pid


def endpoint_pid(pidfile: Path) -> int | None:
    """The endpoint an earlier run started, if it still runs (only if the PID still is one)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if b"--serve" in Path(f"/proc/{pid}/cmdline").read_bytes() and alive(pid):
            return pid
    return None


def stop_endpoint(pidfile: Path) -> None:
    pid = endpoint_pid(pidfile)
    if pid:
        end(pid, 5)


def state_files(pidfile: Path) -> dict[str, Path]:
    stem = pidfile.with_suffix("")
    return {"journal": stem.with_name(stem.name + ".requests"), "log": stem.with_name(stem.name + ".log"),
            "remote": stem.with_name(stem.name + ".remote"), "setup": stem.with_name(stem.name + ".setup"),
            "not-set-up": stem.with_name(stem.name + ".not-set-up")}


def wait_for_endpoint(address: str, pid: int, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not alive(pid):
            break
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection(address, timeout=2)
            connection.request("GET", "/v2/")
            if connection.getresponse().status == 200:
                return
        time.sleep(0.05)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    raise SetupError(f"the mirror endpoint did not start on {address}{': ' + tail[0] if tail else ''}")
