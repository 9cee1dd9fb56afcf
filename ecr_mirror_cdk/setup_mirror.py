"""Make every pull of a build come from the ECR mirror, by registry configuration alone.

Runs at the start of a CodeBuild build (stdlib only, Python 3.9+), or by hand on any Docker host:

    python3 setup_mirror.py --registry 123456789012.dkr.ecr.eu-west-1.amazonaws.com
    python3 setup_mirror.py --report          # at the end: one line, what the mirror served and what fell back

It starts a small mirror endpoint on 127.0.0.1 in the background and points the Docker daemon
(`registry-mirrors` in daemon.json) and BuildKit builders (`buildkitd.toml`) at it. Nothing of the build
itself (Dockerfiles, compose files, commands) is read or changed. A run that fails leaves the host as it found
it, an endpoint an earlier run started still serving.

Why an endpoint on loopback and not ECR itself: dockerd refuses a mirror URL with a path
(moby registry.ValidateMirror), and ECR serves Docker Hub under `<registry>/v2/docker-hub/...`. The endpoint
answers Docker Hub's paths (`/v2/library/python/manifests/3.12-slim`) from the mirror's repositories,
authenticates to ECR itself (`aws ecr get-login-password`, so the daemon needs no credentials), and passes
ECR's blob redirects (layer GETs answer 307 to S3) to the client instead of bytes. BuildKit reaches
the other upstreams through the same endpoint under a path (`127.0.0.1:PORT/quay.io`), which BuildKit accepts
since v0.12.0 (moby/buildkit PR 3427; v0.11 puts the path before `/v2` and falls back to the upstream, and the
report says so), then ECR's own prefix, then the upstream.

When the mirror cannot serve a manifest the endpoint answers with the mirror's error, and dockerd and
BuildKit fall back to the upstream registry; every request answered with an error is recorded, and `--report`
says it.

With a remote daemon (`DOCKER_HOST` naming a daemon that is not this host's: a CodeBuild project with a Docker
server, or any daemon elsewhere), nothing of the daemon is touched: only buildx builders are pointed at ECR's
prefixes.

In a replica region (`--registry` the local copy), `--home-registry` names the mirror's home registry: what
replication has not brought yet (an image first pulled here, a tag that moved minutes ago) comes from there,
whose cache rules can still fill it, instead of from the upstream. ECR replicates, but a cache rule exists
only in its own region (ECR user guide, "Private image replication"; README "One mirror for an organization").
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import http.server
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

DOCKER_HUB = "docker.io"
# The stack's default cache rules, for a run by hand without --map.
DEFAULT_MAP = {"prefixes": {"docker.io": "docker-hub", "public.ecr.aws": "ecr-public", "quay.io": "quay",
                            "registry.k8s.io": "k8s"}}
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
])
PASSED_HEADERS = ("Content-Type", "Content-Length", "Docker-Content-Digest", "Location", "Etag")
DAEMON_TIMEOUT = 60.0
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
_HOST = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
                   r"(?::[0-9]{1,5})?")
# ECR repository names (ECR API reference, CreateRepository repositoryName): the map's prefixes and targets.
_REPOSITORY = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
# What a client may ask for (OCI distribution spec, "Pulling manifests": <name>, <reference>).
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_ROUTE = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<reference>[^/]+)")
# BuildKit before v0.12 sends a path mirror's path before /v2 (`/quay.io/v2/org/app/...`): it cannot use them.
_PATH_FIRST = re.compile(r"/[^/]+\.[^/]+/v2/")
_ECR_HOST = re.compile(r"\d{12}\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?")


class SetupError(Exception):
    """Bad input or a host we cannot configure: one line, and nothing changed."""


def load_json(text: str) -> object:
    """json.loads, with a nesting too deep for the parser reported as the ValueError it is to the user."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


# --- the mirror map ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MirrorMap:
    """Upstream registry -> cache-rule prefix; `registry/path` -> a repository copied directly; and hosts whose
    listed images are copied to `<mirror_prefix>/<host>/<path>` (ecr_mirror_cdk/contract.py mirror_map writes it)."""

    prefixes: dict[str, str]
    repositories: dict[str, str] = field(default_factory=dict)
    mirror_prefix: str = ""
    mirror_hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> MirrorMap:
        try:
            data = load_json(text)
        except ValueError as err:
            raise SetupError(f"--map is not JSON: {err}") from None
        if not isinstance(data, dict) or set(data) - {"prefixes", "repositories", "mirror_prefix", "mirror_hosts"}:
            raise SetupError('--map must be a JSON object with "prefixes", and optionally "repositories", '
                             '"mirror_prefix" and "mirror_hosts"')
        prefixes, repositories = data.get("prefixes", {}), data.get("repositories", {})
        if not isinstance(prefixes, dict) or not isinstance(repositories, dict):
            raise SetupError('--map: "prefixes" and "repositories" must be JSON objects')
        for registry, prefix in prefixes.items():
            if not _HOST.fullmatch(registry) or not isinstance(prefix, str) or not _REPOSITORY.fullmatch(prefix):
                raise SetupError(f"--map: prefixes: {registry!r}: {prefix!r} is not a registry host and ECR prefix")
        base, hosts = data.get("mirror_prefix", ""), data.get("mirror_hosts", [])
        if not isinstance(hosts, list) or not all(isinstance(h, str) and _HOST.fullmatch(h) for h in hosts) or (
                hosts and not (isinstance(base, str) and _REPOSITORY.fullmatch(base))):
            raise SetupError('--map: "mirror_hosts" must list registry hosts, and "mirror_prefix" be an ECR prefix')
        return cls(dict(prefixes), direct_copies(repositories), base if hosts else "", tuple(hosts))

    def upstreams(self) -> list[str]:
        hosts = set(self.prefixes) | set(self.mirror_hosts) | {source.split("/", 1)[0] for source in self.repositories}
        return sorted(hosts, key=lambda h: (h != DOCKER_HUB, h))

    def route(self, name: str) -> tuple[str, str, list[str]]:
        """A requested repository -> (upstream, its path there, mirror repositories to try in order).

        Docker Hub names come as they are (`library/python`, as dockerd and BuildKit send them); other
        upstreams under their host (`quay.io/org/app`). A Docker Hub namespace never holds a dot, so the two
        cannot be confused. The caller has checked `name` against the OCI name grammar.
        """
        first, _, rest = name.partition("/")
        upstream, path = (first, rest) if rest and "." in first else (DOCKER_HUB, name)
        if upstream == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        candidates = []
        if f"{upstream}/{path}" in self.repositories:
            candidates.append(self.repositories[f"{upstream}/{path}"])
        if upstream in self.mirror_hosts:
            candidates.append(f"{self.mirror_prefix}/{ecr_host(upstream)}/{path}")
        if upstream in self.prefixes:
            candidates.append(f"{self.prefixes[upstream]}/{path}")
        return upstream, path, candidates

    def ecr_paths(self, upstream: str) -> list[str]:
        """ECR's own paths for an upstream, for BuildKit path mirrors: the direct copies, then the cache prefix."""
        paths = [f"{self.mirror_prefix}/{ecr_host(upstream)}"] if upstream in self.mirror_hosts else []
        return paths + ([self.prefixes[upstream]] if upstream in self.prefixes else [])


def ecr_host(registry: str) -> str:
    """A registry host as the mirror names its repositories: ECR names have no colon, so a port becomes -PORT
    (ecr_mirror_cdk/config.py default_repository)."""
    return registry.lower().strip("[]").replace(":", "-")


def direct_copies(repositories: dict[str, object]) -> dict[str, str]:
    """`--map`'s "repositories", each a source and its ECR repository, checked."""
    direct = {}
    for source, target in repositories.items():
        # The stack once wrote {"repository": ..., "tags": ...}; a plain name is what it writes now.
        name = target.get("repository") if isinstance(target, dict) else target
        host, _, path = source.partition("/")
        if not (_HOST.fullmatch(host) and _REPOSITORY.fullmatch(path)) or not (
                isinstance(name, str) and _REPOSITORY.fullmatch(name)):
            raise SetupError(f"--map: repositories: {source!r}: {target!r} is not a source and ECR repository")
        direct[source] = name
    return direct


def refusal(kind: str, name: str, reference: str) -> tuple[int, str, str] | None:
    """Why a request is refused before anything is sent upstream (status, OCI error code, message), or None."""
    if not _NAME.fullmatch(name):
        return 400, "NAME_INVALID", "not a repository name (OCI distribution spec: lowercase components joined by /)"
    if not (_DIGEST.fullmatch(reference) or (kind == "manifests" and _TAG.fullmatch(reference))):
        return 400, "DIGEST_INVALID", f"{reference[:80]!r} is not a {'tag or ' if kind == 'manifests' else ''}digest"
    return None


# --- the registry the mirror lives in (ECR, or a loopback registry in tests) -----------------------------


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Registry:
    """HTTP to the mirror's registry: plain HTTP on loopback only, HTTPS otherwise; ECR login on a 401.

    One connection per thread, reused. Redirects are returned, never followed: a blob GET on ECR answers
    307 to S3, and the client fetches from S3 itself.
    """

    def __init__(self, host: str, *, timeout: float = 30.0) -> None:
        self.host = host
        self.timeout = timeout
        self.plain = is_loopback(host)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._authorization: str | None = None

    def request(self, method: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        used = self._authorization
        response = self._send(method, path, headers, used)
        if response.status == 401 and "basic" in response.getheader("WWW-Authenticate", "").lower():
            response.read()
            response = self._send(method, path, headers, self._login(refused=used))
        return response

    def _send(self, method: str, path: str, headers: dict[str, str],
              authorization: str | None) -> http.client.HTTPResponse:
        headers = dict(headers, **({"Authorization": authorization} if authorization else {}))
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request(method, path, headers=headers)
                return connection.getresponse()
            except (OSError, http.client.HTTPException):
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            kind = http.client.HTTPConnection if self.plain else http.client.HTTPSConnection
            connection = kind(self.host, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def _login(self, *, refused: str | None) -> str:
        """One login at a time; requests refused with the same token reuse the login the first one made."""
        with self._lock:
            if self._authorization is None or self._authorization == refused:
                self._authorization = "Basic " + base64.b64encode(f"AWS:{ecr_password(self.host)}".encode()).decode()
            return self._authorization

    def check(self) -> None:
        """Answer `GET /v2/` (logging in if asked), or raise SetupError naming what failed."""
        try:
            response = self.request("GET", "/v2/", {})
            response.read()
        except (OSError, http.client.HTTPException) as err:
            raise SetupError(f"registry {self.host} is unreachable: {err}") from None
        if response.status != 200:
            raise SetupError(f"registry {self.host} answered GET /v2/ with HTTP {response.status}")


def ecr_password(host: str) -> str:
    """The ECR token, from the AWS CLI (in every CodeBuild image) with the build's own credentials."""
    match = _ECR_HOST.fullmatch(host)
    region = match["region"] if match else os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    command = ["aws", "ecr", "get-login-password"] + (["--region", region] if region else [])
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SetupError(f"registry {host} asks for a login and `aws ecr get-login-password` failed: {err}") from None
    if result.returncode != 0 or not result.stdout.strip():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SetupError(f"registry {host} asks for a login and `aws ecr get-login-password` failed: {last}")
    return result.stdout.strip()


# --- the endpoint -------------------------------------------------------------------------------------


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

        def relay(self, response: http.client.HTTPResponse) -> None:
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


def serve(listener: socket.socket, registry: Registry, mirror: MirrorMap, journal: Journal,
          home: Registry | None = None) -> None:
    server = http.server.ThreadingHTTPServer(listener.getsockname(), handler(registry, mirror, journal, home),
                                             bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


# --- configuration files ------------------------------------------------------------------------------


def buildkit_config(mirror: MirrorMap, endpoint: str | None, registry: str) -> str:
    """buildkitd.toml: each upstream pulls through the endpoint (if any), then ECR's cache prefix, then upstream."""
    lines = ["# Written by setup_mirror.py: pulls go to the ECR mirror first (through the endpoint, if any).", ""]
    for upstream in mirror.upstreams():
        if not mirrorable(upstream):
            continue  # such registries are not rate limited anyway
        mirrors = [] if endpoint is None else [endpoint if upstream == DOCKER_HUB else f"{endpoint}/{upstream}"]
        mirrors += [f"{registry}/{path}" for path in mirror.ecr_paths(upstream)]
        if mirrors:
            lines += [f'[registry."{upstream}"]', f"  mirrors = {json.dumps(mirrors)}", ""]
    for host in (endpoint, registry):
        if host and is_loopback(host):
            lines += [f'[registry."{host}"]', "  http = true", ""]
    return "\n".join(lines)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def restore(path: Path, text: str | None) -> None:
    if text is None:
        path.unlink(missing_ok=True)
    else:
        write_atomically(path, text)


def read_text(path: Path) -> str | None:
    """The file's text, None if it does not exist; SetupError naming it if it cannot be read."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise SetupError(f"{path}: cannot read: {err.strerror}") from None


def daemon_config(path: Path, endpoint_url: str, *, live_restore: bool = False) -> tuple[str | None, str]:
    """(the file's current text or None, the text with our mirror first); SetupError if it is not a JSON object."""
    old = read_text(path)
    try:
        data = load_json(old) if old and old.strip() else {}
    except ValueError as err:
        raise SetupError(f"{path}: not valid JSON ({err}); fix it or pass --daemon-config") from None
    if not isinstance(data, dict):
        raise SetupError(f"{path}: must hold a JSON object")
    others = [m for m in data.get("registry-mirrors") or [] if isinstance(m, str) and not is_loopback_url(m)]
    data["registry-mirrors"] = [endpoint_url, *others]
    if live_restore:
        data["live-restore"] = True
    return old, json.dumps(data, indent=2) + "\n"


def is_loopback_url(url: str) -> bool:
    return is_loopback(url.split("://", 1)[-1].rstrip("/"))


# --- the Docker daemon --------------------------------------------------------------------------------


class UnixConnection(http.client.HTTPConnection):
    """HTTP over dockerd's unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def docker_api(api: str, path: str) -> str | None:
    """GET on the daemon's API (`unix:///path`, or plain `tcp://127.0.0.1:PORT`); None unless it answers 200."""
    scheme, _, where = api.partition("://")
    connection = UnixConnection(where) if scheme == "unix" else http.client.HTTPConnection(where, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    return body.decode(errors="replace") if response.status == 200 else None


@dataclass(frozen=True)
class Process:
    pid: int
    argv: list[str]
    environ: dict[str, str]
    cwd: str

    @classmethod
    def of(cls, pidfile: Path) -> Process:
        try:
            pid = int(pidfile.read_text().strip())
            proc = Path(f"/proc/{pid}")
            argv = (proc / "cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
            environ = dict(item.split("=", 1) for item in
                           (proc / "environ").read_bytes().rstrip(b"\0").decode().split("\0") if "=" in item)
            return cls(pid, argv, environ, os.readlink(proc / "cwd"))
        except (OSError, ValueError) as err:
            raise SetupError(f"no running Docker daemon found through {pidfile}: {err}") from None


def parse_flags(args: list[str]) -> list[tuple[str, str]]:
    """dockerd's `--flag value`, `--flag=value`, `-H value` and `-Hvalue` pairs, in order, repeats kept
    (boolean flags pair with the next flag harmlessly; dockerd takes no positional arguments)."""
    pairs = []
    for index, arg in enumerate(args):
        if not arg.startswith("-"):
            continue
        name, eq, value = arg.partition("=")
        if not arg.startswith("--") and len(name) > 2:  # a shorthand with its value attached (spf13/pflag)
            name, eq, value = name[:2], "=", arg[2:].lstrip("=")
        if not eq and index + 1 < len(args) and not args[index + 1].startswith("-"):
            value = args[index + 1]
        pairs.append((name, value))
    return pairs


def config_file(flags: list[tuple[str, str]]) -> Path:
    """The daemon.json dockerd reads: its last --config-file, else the default."""
    return Path(([value for name, value in flags if name == "--config-file"] or ["/etc/docker/daemon.json"])[-1])


def daemon_hosts(flags: list[tuple[str, str]], config_file: Path) -> list[str]:
    """Every address dockerd listens on: each -H/--host, else daemon.json's "hosts", else the default socket."""
    hosts = [value for name, value in flags if name in ("-H", "--host")]
    if not hosts:
        with contextlib.suppress(SetupError, ValueError):
            data = load_json(read_text(config_file) or "{}")
            if isinstance(data, dict) and isinstance(data.get("hosts"), list):
                hosts = [host for host in data["hosts"] if isinstance(host, str)]
    return [host.rstrip("/") for host in hosts] or [DEFAULT_SOCKET]


def local_api(hosts: list[str], tls: bool) -> str:
    """Where to ask dockerd: its first unix socket, else plain TCP on loopback."""
    for host in hosts:
        if host.startswith("unix://") and len(host) > len("unix://"):
            return host
    for host in hosts:
        if host.startswith("tcp://") and is_loopback(host[len("tcp://"):]) and not tls:
            return host
    raise SetupError(f"dockerd listens on {', '.join(hosts)}: the setup needs a unix socket or plain TCP on "
                     "loopback to check it (a dockerd run by systemd with -H fd:// is configured with systemctl)")


@dataclass(frozen=True)
class Daemon:
    """A running dockerd, as /proc shows it: enough to start it again exactly as it was started."""

    process: Process
    config_path: Path
    api: str
    live_restore_flag: bool  # --live-restore on its command line: the file must not set it as well
    output: str | None  # where its stdout went, if a file

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def find(cls, pidfile: Path, config_override: Path | None) -> Daemon:
        process = Process.of(pidfile)
        if not Path(process.argv[0]).name.startswith("dockerd"):
            raise SetupError(f"{pidfile} names process {process.pid} ({process.argv[0] or '?'}), not dockerd")
        flags = parse_flags(process.argv[1:])
        names = {name for name, _ in flags}
        if "--registry-mirror" in names:
            raise SetupError("dockerd was started with --registry-mirror; daemon.json cannot also set registry-mirrors")
        own_config = config_file(flags)
        tls = any(name in ("--tls", "--tlsverify") and value.lower() != "false" for name, value in flags)
        api = local_api(daemon_hosts(flags, own_config), tls)
        output = None
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{process.pid}/fd/1")
            output = target if target.startswith("/") and Path(target).is_file() else None
        return cls(process, config_override or own_config, api, "--live-restore" in names, output)

    def stop(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not gone(pid, DAEMON_TIMEOUT):
            raise SetupError(f"dockerd (pid {pid}) did not stop within {DAEMON_TIMEOUT:.0f} s")

    def start(self, pidfile: Path) -> int:
        """Start dockerd with the command line, environment and directory it had; its PID once it answers.

        A dockerd that does not come up is stopped again: a failed start leaves no daemon of ours behind.
        """
        process = self.process
        with open(self.output or os.devnull, "ab") as output:
            started = subprocess.Popen(process.argv, env=process.environ, cwd=process.cwd, stdin=subprocess.DEVNULL,
                                       stdout=output, stderr=output, start_new_session=True)
        try:
            self._wait_for(started, pidfile)
        except BaseException:
            end(started.pid, DAEMON_TIMEOUT)
            raise
        return started.pid

    def _wait_for(self, started: subprocess.Popen[bytes], pidfile: Path) -> None:
        deadline = time.monotonic() + DAEMON_TIMEOUT
        while time.monotonic() < deadline:
            if started.poll() is not None:
                raise SetupError(f"dockerd exited with status {started.returncode} when started again")
            if docker_api(self.api, "/_ping") == "OK":
                with contextlib.suppress(OSError, ValueError):
                    if int(pidfile.read_text().strip()) == started.pid:
                        return
            time.sleep(0.1)
        raise SetupError(f"dockerd did not answer on {self.api} within {DAEMON_TIMEOUT:.0f} s")

    def info(self) -> dict[str, object]:
        with contextlib.suppress(ValueError):
            info = load_json(docker_api(self.api, "/info") or "{}")
            if isinstance(info, dict):
                return info
        return {}

    def mirrors(self) -> list[str]:
        config = self.info().get("RegistryConfig")
        mirrors = config.get("Mirrors") if isinstance(config, dict) else None
        return [m.rstrip("/") for m in mirrors or [] if isinstance(m, str)]

    def running_containers(self) -> int:
        with contextlib.suppress(ValueError):
            containers = load_json(docker_api(self.api, "/containers/json") or "[]")
            return len(containers) if isinstance(containers, list) else 0
        return 0

    def live_restore_refusal(self) -> str | None:
        """Why running containers cannot stay up through a restart (dockerd's live-restore), or None if they can."""
        if self.live_restore_flag:
            return "dockerd was started with --live-restore=false, which daemon.json cannot override"
        swarm = self.info().get("Swarm")
        if isinstance(swarm, dict) and swarm.get("LocalNodeState") not in (None, "", "inactive"):
            # moby daemon/config isSwarmCompatible: "--live-restore daemon configuration is incompatible with swarm
            # mode"; the cluster component then does not start.
            return "live-restore is incompatible with swarm mode"
        return None

    def reload_live_restore(self) -> bool:
        """SIGHUP reloads live-restore from the file (moby daemon/reload.go, reloadLiveRestore); whether it took."""
        os.kill(self.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.info().get("LiveRestoreEnabled") is True:
                return True
            time.sleep(0.1)
        return False


def alive(pid: int) -> bool:
    """Running, not merely a zombie its parent has yet to reap."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reaps it when it is our own child
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def gone(pid: int, seconds: float) -> bool:
    """Wait up to `seconds` for a process to end; whether it did."""
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def end(pid: int, seconds: float) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `seconds`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        if not gone(pid, seconds):
            os.kill(pid, signal.SIGKILL)
            gone(pid, 5)


def remote_docker_host(docker_host: str, pidfile: Path) -> str | None:
    """DOCKER_HOST when it names a daemon this setup cannot configure: not a unix socket, and not an address
    of the dockerd the pidfile names (a CodeBuild Docker server, or any daemon elsewhere); else None."""
    if not docker_host or docker_host.startswith("unix://"):
        return None
    with contextlib.suppress(SetupError):
        process = Process.of(pidfile)
        flags = parse_flags(process.argv[1:])
        if docker_host.rstrip("/") in daemon_hosts(flags, config_file(flags)):
            return None
    return re.sub(r"//[^@/]*@", "//", docker_host)  # no user part in the log


# --- setup and report ---------------------------------------------------------------------------------


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
            [sys.executable, str(Path(__file__).resolve()), "--serve", "--registry", args.registry,
             "--map", args.map,
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
            "remote": stem.with_name(stem.name + ".remote")}


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


def setup(args: argparse.Namespace) -> str:
    mirror = MirrorMap.parse(args.map)
    for host in (args.registry, args.home_registry):
        if host:
            Registry(host).check()
    remote = remote_docker_host(os.environ.get("DOCKER_HOST", ""), args.daemon_pidfile)
    if remote:
        return setup_remote(args, mirror, remote)
    daemon = Daemon.find(args.daemon_pidfile, args.daemon_config)
    listener = listen(args.port)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    previous = endpoint_pid(args.endpoint_pidfile)
    pid = start_endpoint(args, listener, fresh=previous is None)
    try:
        line = configure(args, mirror, daemon, address, pid)
    except BaseException:
        end(pid, 5)
        raise
    write_atomically(args.endpoint_pidfile, f"{pid}\n")
    state_files(args.endpoint_pidfile)["remote"].unlink(missing_ok=True)
    if previous:  # replaced only now: a run that fails leaves the earlier endpoint serving
        end(previous, 5)
    return line


def configure(args: argparse.Namespace, mirror: MirrorMap, daemon: Daemon, address: str, endpoint: int) -> str:
    """Point BuildKit and dockerd at the endpoint and restart dockerd; on any failure, put back what was there."""
    changed: list[tuple[Path, str | None]] = []
    running: int | None = daemon.pid
    reloaded = False
    try:
        wait_for_endpoint(address, endpoint, state_files(args.endpoint_pidfile)["log"])
        # A restart stops running containers unless live-restore is on in the daemon that stops and the one that
        # starts (moby daemon/daemon.go: Shutdown leaves them, restore shuts down what it finds alive otherwise).
        containers = daemon.running_containers()
        keep = daemon.info().get("LiveRestoreEnabled") is True
        refused = None if keep or not containers else daemon.live_restore_refusal()
        add_live_restore = bool(containers) and not keep and refused is None
        old_daemon, new_daemon = daemon_config(daemon.config_path, f"http://{address}", live_restore=add_live_restore)
        old_buildkit = read_text(args.buildkit_config)
        write_atomically(args.buildkit_config, buildkit_config(mirror, address, args.registry))
        changed.append((args.buildkit_config, old_buildkit))
        write_atomically(daemon.config_path, new_daemon)
        changed.append((daemon.config_path, old_daemon))
        if add_live_restore:
            reloaded = True
            keep = daemon.reload_live_restore()
            refused = None if keep else "dockerd did not take live-restore on a reload"
        # SIGHUP reloads registry-mirrors for pulls, but the daemon's built-in BuildKit (the default builder of
        # `docker build`) keeps the mirrors it started with (seen with dockerd 20.10): a restart applies both.
        daemon.stop(daemon.pid)
        running = None
        running = daemon.start(args.daemon_pidfile)
        if f"http://{address}" not in daemon.mirrors():
            raise SetupError(f"dockerd restarted but does not list the mirror http://{address}")
        kept = daemon.running_containers()
    except BaseException as err:
        for path, text in reversed(changed):
            restore(path, text)
        put_back(daemon, running, reloaded, args.daemon_pidfile, err)
        raise
    home = f", then {args.home_registry}" if args.home_registry else ""
    line = (f"mirror: dockerd (pid {running}) and BuildKit ({args.buildkit_config}) pull "
            f"{', '.join(mirror.upstreams())} through http://{address} (endpoint pid {endpoint}) from "
            f"{args.registry}{home}")
    if containers and keep:
        return line + f"; {kept} of {containers} running containers kept running through the restart (live-restore)"
    if containers:
        return line + f"; restarting dockerd stopped {containers} running containers ({refused})"
    return line


def put_back(daemon: Daemon, running: int | None, reloaded: bool, pidfile: Path, cause: BaseException) -> None:
    """After a failure, with the files restored: the dockerd the setup found running as it was, nothing of ours."""
    try:
        if running == daemon.pid:
            if reloaded:  # never stopped: a reload takes back what the restored file sets
                os.kill(daemon.pid, signal.SIGHUP)
            return
        if running is not None:
            daemon.stop(running)
        daemon.start(pidfile)
    except (SetupError, OSError) as err:
        raise SetupError(f"{cause}; and dockerd could not be put back as it was: {err}") from None


def mirrorable(upstream: str) -> bool:
    """Whether BuildKit can name the upstream with a path mirror (a path cannot follow a port)."""
    return ":" not in upstream and upstream != "localhost"


def setup_remote(args: argparse.Namespace, mirror: MirrorMap, docker_host: str) -> str:
    """A daemon elsewhere (a CodeBuild Docker server): left as it is; buildx builders pull from ECR's prefixes."""
    write_atomically(args.buildkit_config, buildkit_config(mirror, None, args.registry))
    covered = ", ".join(u for u in mirror.upstreams() if mirror.ecr_paths(u) and mirrorable(u)) or "no upstream"
    line = (f"mirror: the Docker daemon is remote ({docker_host}) and is left as it is: buildx builders (BuildKit "
            f"v0.12 or later, with the build's docker login to ECR) pull {covered} from {args.registry}'s cache "
            f"prefixes ({args.buildkit_config}); not covered: the remote daemon's own pulls (docker pull, docker run, "
            "docker build on its default builder), which go to the upstream")
    write_atomically(state_files(args.endpoint_pidfile)["remote"], line + "\n")
    return line


def report(pidfile: Path) -> str:
    """One line: manifests the mirror served, each request that fell back to the upstream, and why."""
    state = state_files(pidfile)
    if state["remote"].exists():
        return ("mirror: the Docker daemon is remote: builders pulled from ECR's cache prefixes themselves, so this "
                "build has no record of what the mirror served")
    try:
        entries = [json.loads(line) for line in state["journal"].read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        return f"mirror: no record of this build's pulls ({state['journal']}: {err})"
    served = [e for e in entries if e.get("served") and e.get("method") == "GET"]
    by_upstream: dict[str, int] = {}
    for entry in served:
        by_upstream[entry["upstream"]] = by_upstream.get(entry["upstream"], 0) + 1
    counts = ", ".join(f"{upstream} {count}" for upstream, count in sorted(by_upstream.items()))
    from_home = sum(1 for entry in served if entry.get("home"))
    if from_home:
        counts += f"; {from_home} from the home registry"
    parts = [f"mirror: {len(served)} manifests served by the mirror" + (f" ({counts})" if counts else "")]
    fell_back, refused = {}, {}
    for entry in entries:
        if entry.get("served"):
            continue
        if "path" in entry:
            refused[f"{entry['method']} {entry['path']}"] = entry["reason"]
        else:
            sep = "@" if ":" in entry["reference"] else ":"
            layer = " (a layer)" if entry.get("kind") == "blobs" else ""
            fell_back[f"{entry['upstream']}/{entry['image']}{sep}{entry['reference']}{layer}"] = entry["reason"]
    if fell_back:
        parts.append(f"{len(fell_back)} fell back to the upstream: {listing(fell_back)}")
    if refused:
        parts.append(f"{len(refused)} refused by the endpoint, so the client went to the upstream: {listing(refused)}")
    if any(entry.get("path_first") for entry in entries):
        parts.append("a builder put a mirror's path before /v2/: its BuildKit is older than v0.12 and cannot use "
                     "path mirrors (moby/buildkit PR 3427), so it pulled those images from the upstream")
    return "; ".join(parts) if len(parts) > 1 else parts[0] + "; no request fell back to the upstream"


def listing(reasons: dict[str, str]) -> str:
    shown = "; ".join(f"{what} ({reason})" for what, reason in list(reasons.items())[:5])
    return shown + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")


def default_buildkit_config() -> Path:
    """Where buildx (v0.9+, util/confutil DefaultConfigFile) looks for a new builder's buildkitd.toml."""
    if os.environ.get("MIRROR_BUILDKIT_CONFIG"):
        return Path(os.environ["MIRROR_BUILDKIT_CONFIG"])
    docker_config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    return Path(os.environ.get("BUILDX_CONFIG") or docker_config / "buildx") / "buildkitd.default.toml"


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments as one line on stderr, like every other error of the setup (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"setup_mirror: {message}\n")


def port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535, 0 for any free one)")
    return int(text)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=os.environ.get("MIRROR_REGISTRY") or None,
                        help="the mirror's registry, HOST[:PORT]; HTTP on loopback only (default: $MIRROR_REGISTRY)")
    parser.add_argument("--home-registry", default=os.environ.get("MIRROR_HOME_REGISTRY") or None,
                        help="in a replica region: the mirror's home registry, tried after --registry "
                             "(default: $MIRROR_HOME_REGISTRY)")
    parser.add_argument("--map", default=os.environ.get("MIRROR_MAP") or json.dumps(DEFAULT_MAP),
                        help="JSON: upstream -> cache prefix, source -> repository (default: $MIRROR_MAP)")
    parser.add_argument("--daemon-config", type=Path, default=None,
                        help="daemon.json (default: dockerd's --config-file, else /etc/docker/daemon.json)")
    parser.add_argument("--daemon-pidfile", type=Path,
                        default=Path(os.environ.get("MIRROR_DAEMON_PIDFILE", "/var/run/docker.pid")))
    parser.add_argument("--endpoint-pidfile", type=Path,
                        default=Path(os.environ.get("MIRROR_ENDPOINT_PIDFILE", "/var/run/mirror-endpoint.pid")))
    parser.add_argument("--buildkit-config", type=Path, default=default_buildkit_config())
    parser.add_argument("--port", type=port, default=0, help="the endpoint's port on 127.0.0.1 (default: any free)")
    parser.add_argument("--report", action="store_true", help="print what this build's pulls got, and exit")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.report:  # reads this build's journal only, whatever $MIRROR_REGISTRY holds
        return args
    if not args.registry:
        parser.error("--registry (or $MIRROR_REGISTRY) is required")
    for flag, host in (("--registry", args.registry), ("--home-registry", args.home_registry)):
        if host is not None and ("://" in host or "/" in host or not _HOST.fullmatch(host)):
            parser.error(f"{flag} takes HOST[:PORT], got {host!r}")
    if args.home_registry == args.registry:  # the home region itself (the contract names it there too)
        args.home_registry = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    try:
        if args.report:
            print(report(args.endpoint_pidfile))
        elif args.serve:
            listener = socket.socket(fileno=args.listen_fd)
            journal = Journal(state_files(args.endpoint_pidfile)["journal"])
            home = Registry(args.home_registry) if args.home_registry else None
            serve(listener, Registry(args.registry), MirrorMap.parse(args.map), journal, home)
        else:
            print(setup(args), flush=True)
    except SetupError as err:
        print(f"setup_mirror: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
