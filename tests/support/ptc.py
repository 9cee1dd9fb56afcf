"""An ECR-faithful pull-through cache on loopback: a threaded HTTP proxy in front of a plain
distribution registry (its storage) and an upstream registry.

It behaves as the ECR user guide documents, which distribution's own proxy mode does not (that
re-checks a tag upstream on every request):
- repositories live under the rule's prefix (`/v2/<prefix>/<upstream path>/...`); any other name
  is 404 NAME_UNKNOWN, as in ECR; `/v2/` answers 200. With `own_repositories`, other names are
  the registry's own repositories instead (an ECR registry holds both; the fleet simulation keeps
  the mirror's direct copies there): served and pushed as storage has them, never looked up upstream.
- a manifest by tag: "Amazon ECR checks the remote repository up to once per 24 hours to verify
  whether the cached image is the latest version. This timer is based off the last pull of the
  cached image." A stored tag last checked less than `refresh_interval` ago (by `clock`, per tag)
  is served as stored, however stale; otherwise the tag is HEADed upstream, the digest it names is
  fetched when not stored, the tag set in storage, and then served. A tag pushed into the cache has
  not been checked upstream: its next pull checks.
- a manifest by digest: served when stored, else fetched from upstream by digest and stored.
- fetching an index fetches every manifest it lists (as ECR does); fetching an image manifest
  fetches its blobs first, because storage (distribution) refuses a manifest whose blobs it lacks.
  ECR fetches layers lazily instead; blob GETs cost no Docker Hub pull, so manifest GET counts at
  the upstream are as ECR's.
- a blob: served from storage, else fetched from upstream into a storage upload (streamed, never
  held whole), then served from storage: fetch-then-serve, not tee.
- pushes (PUT/POST/PATCH/DELETE) pass through to storage, so tests can seed it; the mirror never pushes
  into a cache rule's repositories (ECR documents no such push).
`username`/`password` (optional): the rule's upstream credentials, sent as Basic on every upstream
request (the loopback "Docker Hub", tests/support/limiter.py, counts them as that user's pulls).
`upstream_requests` lists (method, path) of every request sent upstream. Fills run one at a time
(one lock): simple, and concurrent pulls of one image never fetch it twice.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.registry import RegistryServer
from tests.support.wire import CHUNK, request_body

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_ACCEPT = ", ".join(MANIFEST_TYPES)
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "host"}
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs|tags)/(?P<rest>.*)$")


class PullThroughCache:
    def __init__(self, root: Path, upstream: str, *, prefix: str = "docker-hub", refresh_interval: float = 86400,
                 clock: Callable[[], float] = time.time, username: str | None = None,
                 password: str | None = None, own_repositories: bool = False) -> None:
        self.upstream = upstream  # host:port
        self.prefix = prefix
        self.own_repositories = own_repositories
        self.refresh_interval = refresh_interval
        self.clock = clock
        self._authorization: str | None = None
        if username is not None:
            pair = f"{username}:{password or ''}".encode()
            self._authorization = "Basic " + base64.b64encode(pair).decode()
        self.storage = RegistryServer(root, name="ptc-storage")
        self.upstream_requests: list[tuple[str, str]] = []
        self._checked: dict[tuple[str, str], float] = {}  # (repository, tag) -> last upstream check
        self._fill = threading.RLock()
        self._record = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.host = ""
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> PullThroughCache:
        self.storage.start()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self.url = f"http://{self.host}"
        threading.Thread(target=self._server.serve_forever, name="ptc", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.storage.stop()

    def __enter__(self) -> PullThroughCache:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests to the upstream and to storage -------------------------------------------------

    def _upstream(self, method: str, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        with self._record:
            self.upstream_requests.append((method, path))
        headers = dict(headers or {})
        if self._authorization:
            headers["Authorization"] = self._authorization
        return _send(self.upstream, method, path, headers)

    def _storage(self, method: str, path: str, headers: dict[str, str] | None = None,
                 body: bytes | Iterator[bytes] | None = None) -> http.client.HTTPResponse:
        return _send(self.storage.host, method, path, headers or {}, body)

    def _stored_manifest(self, repository: str, reference: str) -> str | None:
        response = self._storage("HEAD", f"/v2/{repository}/manifests/{reference}", {"Accept": _ACCEPT})
        response.read()
        return response.getheader("Docker-Content-Digest") if response.status == 200 else None

    def _stored_blob(self, repository: str, digest: str) -> bool:
        response = self._storage("HEAD", f"/v2/{repository}/blobs/{digest}")
        response.read()
        return response.status == 200

    # -- filling storage from the upstream -------------------------------------------------------

    def ensure_tag(self, repository: str, tag: str) -> None:
        """ECR's rule: check upstream only when the tag is not stored or its last check is too old."""
        with self._fill:
            last = self._checked.get((repository, tag))
            stored = self._stored_manifest(repository, tag)
            if stored is not None and last is not None and self.clock() - last < self.refresh_interval:
                return
            upstream_repository = repository.removeprefix(self.prefix + "/")
            response = self._upstream("HEAD", f"/v2/{upstream_repository}/manifests/{tag}", {"Accept": _ACCEPT})
            response.read()
            digest = response.getheader("Docker-Content-Digest")
            if response.status != 200 or not digest:
                return  # serve what is stored, or storage's 404
            self._checked[(repository, tag)] = self.clock()
            if digest == stored:
                return
            body, media_type = self.ensure_manifest(repository, digest)
            self._put(repository, tag, body, media_type)

    def ensure_manifest(self, repository: str, digest: str) -> tuple[bytes, str]:
        """The manifest's bytes and type, fetched from upstream (with what it references) unless stored."""
        with self._fill:
            if self._stored_manifest(repository, digest) is not None:
                response = self._storage("GET", f"/v2/{repository}/manifests/{digest}", {"Accept": _ACCEPT})
                return response.read(), (response.getheader("Content-Type") or "")
            upstream_repository = repository.removeprefix(self.prefix + "/")
            response = self._upstream("GET", f"/v2/{upstream_repository}/manifests/{digest}", {"Accept": _ACCEPT})
            body = response.read()
            if response.status != 200:
                raise LookupError(f"upstream {upstream_repository}@{digest}: HTTP {response.status}")
            media_type = response.getheader("Content-Type") or ""
            doc = json.loads(body)
            for child in doc.get("manifests", []):
                self.ensure_manifest(repository, child["digest"])
            for blob in [doc["config"], *doc.get("layers", [])] if "config" in doc else []:
                self.ensure_blob(repository, blob["digest"])
            self._put(repository, digest, body, media_type)
            return body, media_type

    def ensure_blob(self, repository: str, digest: str) -> None:
        """Stream a blob from upstream into a storage upload, unless storage has it."""
        with self._fill:
            if self._stored_blob(repository, digest):
                return
            upstream_repository = repository.removeprefix(self.prefix + "/")
            source = self._upstream("GET", f"/v2/{upstream_repository}/blobs/{digest}")
            if source.status != 200:
                source.read()
                raise LookupError(f"upstream blob {upstream_repository}@{digest}: HTTP {source.status}")
            start = self._storage("POST", f"/v2/{repository}/blobs/uploads/", {"Content-Length": "0"})
            start.read()
            location = urllib.parse.urlsplit(start.getheader("Location") or "")
            query = f"{location.query}&" if location.query else ""
            target = f"{location.path}?{query}digest={urllib.parse.quote(digest)}"
            length = source.getheader("Content-Length") or "0"
            done = self._storage("PUT", target, {"Content-Length": length,
                                                 "Content-Type": "application/octet-stream"}, _chunks(source))
            done.read()
            if done.status != 201:
                raise LookupError(f"storage refused blob {digest}: HTTP {done.status}")

    def _put(self, repository: str, reference: str, body: bytes, media_type: str) -> None:
        response = self._storage("PUT", f"/v2/{repository}/manifests/{reference}",
                                 {"Content-Type": media_type, "Content-Length": str(len(body))}, body)
        detail = response.read()
        if response.status != 201:
            raise LookupError(f"storage refused {repository}:{reference}: HTTP {response.status} {detail[:200]!r}")


def _send(host: str, method: str, path: str, headers: dict[str, str] | list[tuple[str, str]],
          body: bytes | Iterator[bytes] | None = None) -> http.client.HTTPResponse:
    """One request on a fresh connection (http.client sets TCP_NODELAY); the body is streamed."""
    pairs = list(headers.items()) if isinstance(headers, dict) else headers
    connection = http.client.HTTPConnection(host, timeout=60)
    connection.putrequest(method, path, skip_host=any(k.lower() == "host" for k, _ in pairs),
                          skip_accept_encoding=True)
    for name, value in pairs:  # repeated headers (Accept) go out one by one, as received
        connection.putheader(name, value)
    if isinstance(body, bytes):
        connection.endheaders(body)
    else:
        connection.endheaders()
        for piece in body or ():
            connection.send(piece)
    return connection.getresponse()  # the response holds the socket until its body is read


def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    while piece := response.read(CHUNK):
        yield piece


def _error(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


def _handler(cache: PullThroughCache) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # TCP_NODELAY: small manifest replies must not wait on Nagle

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self._serve()

        do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_GET  # noqa: N815

        def _serve(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path in ("/v2", "/v2/"):
                return self._reply(200, b"{}", "application/json")
            match = _PATH.match(path)
            if match is not None and cache.own_repositories and not match["name"].startswith(cache.prefix + "/"):
                return self._relay()  # a repository of the registry's own: no cache rule applies
            if match is None or not match["name"].startswith(cache.prefix + "/"):
                self._discard_body()
                return self._reply(404, _error("NAME_UNKNOWN", "repository name not known to registry"),
                                   "application/json")
            repository, kind, rest = match["name"], match["kind"], match["rest"]
            try:
                if self.command in ("GET", "HEAD") and kind == "manifests":
                    if _DIGEST.match(rest):
                        cache.ensure_manifest(repository, rest)
                    else:
                        cache.ensure_tag(repository, rest)
                elif self.command in ("GET", "HEAD") and kind == "blobs" and _DIGEST.match(rest):
                    cache.ensure_blob(repository, rest)
            except LookupError:
                pass  # not upstream either: storage answers its 404
            self._relay()

        def _discard_body(self) -> None:
            for _ in request_body(self):
                pass

        def _relay(self) -> None:
            """Pass the request to storage (the Host header too, so Locations point back here)."""
            chunked = "Content-Length" not in self.headers and bool(self.headers.get("Transfer-Encoding"))
            headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP - {"host"}]
            body: bytes | Iterator[bytes] | None = request_body(self)
            if chunked:
                body = b"".join(request_body(self))  # small: only test pushers send chunked bodies
                headers.append(("Content-Length", str(len(body))))
            response = _send(cache.storage.host, self.command, self.path, headers, body)
            self.send_response(response.status)
            length = response.getheader("Content-Length")
            data = None if length is not None or self.command == "HEAD" else response.read()
            for name, value in response.getheaders():
                if name.lower() not in _HOP and not (data is not None and name.lower() == "content-length"):
                    self.send_header(name, value)
            if data is not None:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                response.read()
                return
            if data is not None:
                self.wfile.write(data)
                return
            for piece in _chunks(response):
                self.wfile.write(piece)

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler
