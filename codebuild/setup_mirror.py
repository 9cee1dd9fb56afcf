"""Make every pull of a build come from the ECR mirror, by registry configuration alone.

Runs at the start of a CodeBuild build (stdlib only, Python 3.9+), or by hand on any Docker host:

    python3 setup_mirror.py --registry 123456789012.dkr.ecr.eu-west-1.amazonaws.com
    python3 setup_mirror.py --report          # at the end: one line, what the mirror served and what fell back

It starts a small mirror endpoint on 127.0.0.1 in the background and points the Docker daemon
(`registry-mirrors` in daemon.json) and BuildKit builders (`buildkitd.toml`) at it. Nothing of the build
itself (Dockerfiles, compose files, commands) is read or changed.

Why an endpoint on loopback and not ECR itself: dockerd refuses a mirror URL with a path
(moby registry.ValidateMirror), and ECR serves Docker Hub under `<registry>/v2/docker-hub/...`. The endpoint
answers Docker Hub's paths (`/v2/library/python/manifests/3.12-slim`) from the mirror's repositories,
authenticates to ECR itself (`aws ecr get-login-password`, so the daemon needs no credentials), and passes
ECR's blob redirects (layer GETs answer 307 to S3) to the client instead of bytes. BuildKit reaches the
other upstreams through the same endpoint under a path (`127.0.0.1:PORT/quay.io`), which BuildKit
accepts since v0.11 (moby/buildkit PR 3427), and falls back to ECR's own prefix, then to the upstream.

When the mirror cannot serve a manifest the endpoint answers with the mirror's error, and dockerd and
BuildKit fall back to the upstream registry; every such request is recorded, and `--report` says it.

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
ECR_TOKEN_SECONDS = 6 * 3600  # ECR tokens last 12 hours (ECR user guide, "Registry authentication")
DAEMON_TIMEOUT = 60.0
_HOST = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
                   r"(?::[0-9]{1,5})?")
_REPOSITORY = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
_ROUTE = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<reference>[^/]+)")
_ECR_HOST = re.compile(r"\d{12}\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?")


class SetupError(Exception):
    """Bad input or a host we cannot configure: one line, and nothing changed."""


# --- the mirror map ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MirrorMap:
    """Upstream registry -> cache-rule prefix, and `registry/path` -> a repository copied directly."""

    prefixes: dict[str, str]
    repositories: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> MirrorMap:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise SetupError(f"--map is not JSON: {err}") from None
        if not isinstance(data, dict) or set(data) - {"prefixes", "repositories"}:
            raise SetupError('--map must be a JSON object with "prefixes" and optionally "repositories"')
        prefixes, repositories = data.get("prefixes", {}), data.get("repositories", {})
        if not isinstance(prefixes, dict) or not isinstance(repositories, dict):
            raise SetupError('--map: "prefixes" and "repositories" must be JSON objects')
        for registry, prefix in prefixes.items():
            if not _HOST.fullmatch(registry) or not isinstance(prefix, str) or not _REPOSITORY.fullmatch(prefix):
                raise SetupError(f"--map: prefixes: {registry!r}: {prefix!r} is not a registry host and ECR prefix")
        direct = {}
        for source, target in repositories.items():
            # The stack writes {"repository": ..., "tags": ...}; a plain name is accepted too.
            name = target.get("repository") if isinstance(target, dict) else target
            host, _, path = source.partition("/")
            if not (_HOST.fullmatch(host) and _REPOSITORY.fullmatch(path)) or not (
                    isinstance(name, str) and _REPOSITORY.fullmatch(name)):
                raise SetupError(f"--map: repositories: {source!r}: {target!r} is not a source and ECR repository")
            direct[source] = name
        return cls(dict(prefixes), direct)

    def upstreams(self) -> list[str]:
        hosts = set(self.prefixes) | {source.split("/", 1)[0] for source in self.repositories}
        return sorted(hosts, key=lambda h: (h != DOCKER_HUB, h))

    def route(self, name: str) -> tuple[str, str, list[str]]:
        """A requested repository -> (upstream, its path there, mirror repositories to try in order).

        Docker Hub names come as they are (`library/python`, as dockerd and BuildKit send them); other
        upstreams under their host (`quay.io/org/app`). A Docker Hub namespace never holds a dot, so the two
        cannot be confused.
        """
        first, _, rest = name.partition("/")
        upstream, path = (first, rest) if rest and "." in first else (DOCKER_HUB, name)
        if upstream == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        candidates = []
        if f"{upstream}/{path}" in self.repositories:
            candidates.append(self.repositories[f"{upstream}/{path}"])
        if upstream in self.prefixes:
            candidates.append(f"{self.prefixes[upstream]}/{path}")
        return upstream, path, candidates


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
        self._fetched = 0.0

    def request(self, method: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        response = self._send(method, path, headers)
        if response.status == 401 and "basic" in response.getheader("WWW-Authenticate", "").lower():
            response.read()
            self._login(force=self._authorization is not None)
            response = self._send(method, path, headers)
        return response

    def _send(self, method: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        headers = dict(headers)
        if self._authorization:
            headers["Authorization"] = self._authorization
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

    def _login(self, *, force: bool) -> None:
        with self._lock:
            if self._authorization and not force and time.monotonic() - self._fetched < ECR_TOKEN_SECONDS:
                return
            self._authorization = "Basic " + base64.b64encode(f"AWS:{ecr_password(self.host)}".encode()).decode()
            self._fetched = time.monotonic()

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
    """One JSON line per manifest request: served by the mirror, or fell back (and why)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, **entry: object) -> None:
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self._lock, self.path.open("a") as out:
            out.write(line)


def error_reason(status: int, body: bytes) -> str:
    """`404 MANIFEST_UNKNOWN`, from the registry's error body when it has one (OCI distribution spec)."""
    try:
        errors = json.loads(body)["errors"]
        code = str(errors[0].get("code") or "")
        message = str(errors[0].get("message") or "")[:120]
        return " ".join(part for part in (str(status), code, message and f"({message})") if part)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return str(status)


def handler(registry: Registry, mirror: MirrorMap, journal: Journal,
            home: Registry | None = None) -> type[http.server.BaseHTTPRequestHandler]:
    sources = [registry] if home is None else [registry, home]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "ecr-mirror-endpoint"

        def log_message(self, format: str, *args: object) -> None:
            pass  # the journal records what matters; paths may carry nothing secret, but keep CI logs short

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.serve()

        def do_HEAD(self) -> None:  # noqa: N802
            self.serve()

        def serve(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/v2", "/v2/"):
                return self.reply(200, b"{}", {"Content-Type": "application/json"})
            match = _ROUTE.fullmatch(path)
            if not match:
                return self.reply(404, b'{"errors":[{"code":"UNSUPPORTED","message":"pull only"}]}')
            upstream, repo, candidates = mirror.route(match["name"])
            kind, reference = match["kind"], match["reference"]
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
                    if response.status < 400:
                        if kind == "manifests":
                            journal.record(served=True, method=self.command, upstream=upstream, image=f"{repo}",
                                           reference=reference, repository=repository,
                                           **({"home": True} if source is home else {}))
                        return self.relay(response)
                    body = response.read()
                    reasons.append(f"{where}{repository}: {error_reason(response.status, body)}")
            if not candidates:
                reasons.append(f"the mirror holds nothing of {upstream}")
            if kind == "manifests":
                journal.record(served=False, method=self.command, upstream=upstream, image=repo, reference=reference,
                               reason="; ".join(reasons))
            message = json.dumps({"errors": [{"code": "NOT_MIRRORED", "message": "; ".join(reasons)}]})
            self.reply(404, message.encode())

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


def buildkit_config(mirror: MirrorMap, endpoint: str, registry: str) -> str:
    """buildkitd.toml: each upstream pulls through the endpoint, then ECR's own cache prefix, then upstream."""
    lines = ["# Written by setup_mirror.py: pulls go through the build's mirror endpoint, then the ECR mirror.", ""]
    for upstream in mirror.upstreams():
        if ":" in upstream or upstream == "localhost":
            continue  # a path mirror cannot name a port; such registries are not rate limited anyway
        mirrors = [endpoint if upstream == DOCKER_HUB else f"{endpoint}/{upstream}"]
        if upstream in mirror.prefixes:
            mirrors.append(f"{registry}/{mirror.prefixes[upstream]}")
        lines += [f'[registry."{upstream}"]', f"  mirrors = {json.dumps(mirrors)}", ""]
    for host in (endpoint, registry):
        if is_loopback(host):
            lines += [f'[registry."{host}"]', "  http = true", ""]
    return "\n".join(lines)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


# --- the Docker daemon --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Daemon:
    """A running dockerd, as /proc shows it: enough to start it again exactly as it was started."""

    pid: int
    argv: list[str]
    environ: dict[str, str]
    cwd: str
    config_path: Path
    socket_path: str
    output: str | None  # where its stdout went, if a file

    @classmethod
    def find(cls, pidfile: Path, config_override: Path | None) -> Daemon:
        try:
            pid = int(pidfile.read_text().strip())
            proc = Path(f"/proc/{pid}")
            argv = (proc / "cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
            environ = dict(item.split("=", 1) for item in
                           (proc / "environ").read_bytes().rstrip(b"\0").decode().split("\0") if "=" in item)
            cwd = os.readlink(proc / "cwd")
        except (OSError, ValueError) as err:
            raise SetupError(f"no running Docker daemon found through {pidfile}: {err}") from None
        if not argv or not Path(argv[0]).name.startswith("dockerd"):
            raise SetupError(f"{pidfile} names process {pid} ({argv[0] if argv else '?'}), not dockerd")
        flags = dict(parse_flags(argv[1:]))
        if "--registry-mirror" in flags:
            raise SetupError("dockerd was started with --registry-mirror; daemon.json cannot also set registry-mirrors")
        config_path = config_override or Path(flags.get("--config-file", "/etc/docker/daemon.json"))
        host = flags.get("-H") or flags.get("--host") or "unix:///var/run/docker.sock"
        if not host.startswith("unix://"):
            host = "unix:///var/run/docker.sock"
        output = None
        with contextlib.suppress(OSError):
            target = os.readlink(proc / "fd" / "1")
            output = target if target.startswith("/") and Path(target).is_file() else None
        return cls(pid, argv, environ, cwd, config_path, host[len("unix://"):], output)

    def stop(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not gone(pid, DAEMON_TIMEOUT):
            raise SetupError(f"dockerd (pid {pid}) did not stop within {DAEMON_TIMEOUT:.0f} s")

    def start(self, pidfile: Path) -> int:
        """Start dockerd with the command line, environment and directory it had; its PID once it answers."""
        with open(self.output or os.devnull, "ab") as output:
            process = subprocess.Popen(self.argv, env=self.environ, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                       stdout=output, stderr=output, start_new_session=True)
        deadline = time.monotonic() + DAEMON_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SetupError(f"dockerd exited with status {process.returncode} when started again")
            if docker_api(self.socket_path, "/_ping") == "OK":
                with contextlib.suppress(OSError, ValueError):
                    if int(pidfile.read_text().strip()) == process.pid:
                        return process.pid
            time.sleep(0.1)
        raise SetupError(f"dockerd did not answer on {self.socket_path} within {DAEMON_TIMEOUT:.0f} s")

    def mirrors(self) -> list[str]:
        info = json.loads(docker_api(self.socket_path, "/info") or "{}")
        return [m.rstrip("/") for m in (info.get("RegistryConfig") or {}).get("Mirrors") or []]


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


def parse_flags(args: list[str]) -> list[tuple[str, str]]:
    """dockerd's `--flag value` and `--flag=value` pairs (boolean flags pair with the next flag harmlessly)."""
    pairs = []
    for index, arg in enumerate(args):
        if arg.startswith("-"):
            name, eq, value = arg.partition("=")
            if not eq and index + 1 < len(args) and not args[index + 1].startswith("-"):
                value = args[index + 1]
            pairs.append((name, value))
    return pairs


def docker_api(socket_path: str, path: str) -> str | None:
    """GET on the daemon's unix socket; None if it does not answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(socket_path)
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    return body.decode(errors="replace") if head.split(b" ", 2)[1:2] == [b"200"] else None


def daemon_config(path: Path, endpoint_url: str) -> tuple[str | None, str]:
    """(the file's current text or None, the text with our mirror first); SetupError if it is not a JSON object."""
    try:
        old = path.read_text()
    except FileNotFoundError:
        old = None
    except OSError as err:
        raise SetupError(f"{path}: cannot read: {err.strerror}") from None
    try:
        data = json.loads(old) if old and old.strip() else {}
    except ValueError as err:
        raise SetupError(f"{path}: not valid JSON ({err}); fix it or pass --daemon-config") from None
    if not isinstance(data, dict):
        raise SetupError(f"{path}: must hold a JSON object")
    others = [m for m in data.get("registry-mirrors") or [] if isinstance(m, str) and not is_loopback_url(m)]
    data["registry-mirrors"] = [endpoint_url, *others]
    return old, json.dumps(data, indent=2) + "\n"


def is_loopback_url(url: str) -> bool:
    return is_loopback(url.split("://", 1)[-1].rstrip("/"))


# --- setup and report ---------------------------------------------------------------------------------


def start_endpoint(args: argparse.Namespace, mirror: MirrorMap) -> tuple[int, str]:
    """Bind 127.0.0.1, hand the socket to a background copy of this script; return its PID and address."""
    stop_endpoint(args.endpoint_pidfile)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(64)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    state = state_files(args.endpoint_pidfile)
    state["journal"].write_text("")
    with state["log"].open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", "--registry", args.registry,
             "--map", json.dumps({"prefixes": mirror.prefixes, "repositories": mirror.repositories}),
             "--endpoint-pidfile", str(args.endpoint_pidfile), "--listen-fd", str(listener.fileno()),
             *(["--home-registry", args.home_registry] if args.home_registry else [])],
            pass_fds=[listener.fileno()], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    listener.close()
    write_atomically(args.endpoint_pidfile, f"{process.pid}\n")
    return process.pid, address


def stop_endpoint(pidfile: Path) -> None:
    """Stop an endpoint an earlier run started (only if the PID still is one)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if b"--serve" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGTERM)
            gone(pid, 5)


def state_files(pidfile: Path) -> dict[str, Path]:
    stem = pidfile.with_suffix("")
    return {"journal": stem.with_name(stem.name + ".requests"), "log": stem.with_name(stem.name + ".log")}


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
    Registry(args.registry).check()
    if args.home_registry:
        Registry(args.home_registry).check()
    daemon = Daemon.find(args.daemon_pidfile, args.daemon_config)
    pid, address = start_endpoint(args, mirror)
    changed: list[tuple[Path, str | None]] = []
    running = daemon.pid
    try:
        wait_for_endpoint(address, pid, state_files(args.endpoint_pidfile)["log"])
        old_daemon, new_daemon = daemon_config(daemon.config_path, f"http://{address}")
        old_buildkit = args.buildkit_config.read_text() if args.buildkit_config.exists() else None
        write_atomically(args.buildkit_config, buildkit_config(mirror, address, args.registry))
        changed.append((args.buildkit_config, old_buildkit))
        write_atomically(daemon.config_path, new_daemon)
        changed.append((daemon.config_path, old_daemon))
        # SIGHUP reloads registry-mirrors for pulls, but the daemon's built-in BuildKit (the default builder of
        # `docker build`) keeps the mirrors it started with (seen with dockerd 20.10): a restart applies both.
        daemon.stop(running)
        running = daemon.start(args.daemon_pidfile)
        if f"http://{address}" not in daemon.mirrors():
            raise SetupError(f"dockerd restarted but does not list the mirror http://{address}")
    except BaseException:
        stop_endpoint(args.endpoint_pidfile)
        for path, text in reversed(changed):
            restore(path, text)
        if running != daemon.pid or not alive(daemon.pid):  # put the daemon back as it was
            with contextlib.suppress(SetupError, OSError):
                daemon.stop(running)
                daemon.start(args.daemon_pidfile)
        raise
    covered = ", ".join(mirror.upstreams())
    home = f", then {args.home_registry}" if args.home_registry else ""
    return (f"mirror: dockerd (pid {running}) and BuildKit ({args.buildkit_config}) pull {covered} through "
            f"http://{address} (endpoint pid {pid}) from {args.registry}{home}")


def restore(path: Path, text: str | None) -> None:
    if text is None:
        path.unlink(missing_ok=True)
    else:
        write_atomically(path, text)


def report(pidfile: Path) -> str:
    """One line: manifests the mirror served, and each request that fell back to the upstream, with why."""
    journal = state_files(pidfile)["journal"]
    try:
        entries = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        return f"mirror: no record of this build's pulls ({journal}: {err})"
    served = [e for e in entries if e["served"] and e["method"] == "GET"]
    by_upstream: dict[str, int] = {}
    for entry in served:
        by_upstream[entry["upstream"]] = by_upstream.get(entry["upstream"], 0) + 1
    counts = ", ".join(f"{upstream} {count}" for upstream, count in sorted(by_upstream.items()))
    from_home = sum(1 for entry in served if entry.get("home"))
    if from_home:
        counts += f"; {from_home} from the home registry"
    line = f"mirror: {len(served)} manifests served by the mirror" + (f" ({counts})" if counts else "")
    fell_back: dict[str, str] = {}
    for entry in entries:
        if not entry["served"]:
            image = f"{entry['upstream']}/{entry['image']}{'@' if ':' in entry['reference'] else ':'}"
            fell_back[image + entry["reference"]] = entry["reason"]
    if not fell_back:
        return line + "; no request fell back to the upstream"
    shown = "; ".join(f"{image} ({reason})" for image, reason in list(fell_back.items())[:5])
    more = f"; and {len(fell_back) - 5} more" if len(fell_back) > 5 else ""
    return line + f"; {len(fell_back)} fell back to the upstream: {shown}{more}"


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
    parser.add_argument("--port", type=int, default=0, help="the endpoint's port on 127.0.0.1 (default: any free)")
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
