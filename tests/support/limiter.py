"""A "Docker Hub" for tests and the fleet simulation: a rate-limiting reverse proxy in front of a
loopback docker-registry that counts pulls the way Docker Hub documents them.

What it reproduces (Docker's docs, docker/docs `content/manuals/docker-hub/usage/`):
- a pull is a manifest GET (`/v2/<name>/manifests/<reference>`); HEAD is free ("Using GET emulates a
  real pull and counts towards the limit. Using HEAD won't.", pulls.md), blobs are free;
- pulls are counted per identity in a sliding window: the user behind the token (or Basic
  credentials), else the client address (the first `X-Forwarded-For` entry, which the fleet uses
  to simulate a shared NAT address, or the TCP peer), or its IPv6 /64 (both policies say so);
- the limits and the window come from a `Policy`: `SIX_HOURS` (in force: 100 anonymous per IPv4
  address or IPv6 /64 / 200 per personal account per 6 hours, pulls.md at commit 000a96d) or `HOURLY`
  (announced for April 2025, not enforced, kept as the stricter case: 10 anonymous per IPv4 address or
  IPv6 /64 / 100 per personal account per hour, usage/_index.md at commit 0d14e0d; docker/docs PR 21494
  announced 40 per account, PR 22134 made it 100);
- `ratelimit-limit: <limit>;w=<window seconds>` (`100;w=21600`, `10;w=3600`), `ratelimit-remaining`
  in the same shape and `docker-ratelimit-source` on manifest responses, GET and HEAD;
- past the limit a manifest GET gets `429` and the JSON error body Docker Hub sends
  (`TOOMANYREQUESTS`, which clients print as `toomanyrequests: You have reached ...`);
- the token dance: every `/v2/` request without credentials gets `401` with a
  `WWW-Authenticate: Bearer realm=".../token",service="registry.docker.io"` challenge; `/token`
  issues an anonymous token, or a user's token for valid Basic credentials.

Deliberate differences: `docker-ratelimit-source` carries the user name where Docker Hub sends the
account's id; tokens never expire; only a GET the registry answers with 2xx is counted (a reserved
slot is handed back on 404), and the 429 carries no `Retry-After` (Docker Hub's pull limit sends
none). Docker Hub's abuse limit ("thousands of requests per minute" per IPv4 address or IPv6 /64,
usage/_index.md) is not modelled. Time comes from an injectable clock, so a simulated day runs as
fast as the requests do.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import re
import secrets
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.support.wire import CHUNK, request_body

SERVICE = "registry.docker.io"
CLIENT_IP_HEADER = "X-Forwarded-For"
TOO_MANY_REQUESTS_MESSAGE = (
    "You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: "
    "https://www.docker.com/increase-rate-limits"
)
TOO_MANY_REQUESTS_BODY = json.dumps(
    {"errors": [{"code": "TOOMANYREQUESTS", "message": TOO_MANY_REQUESTS_MESSAGE}]}, separators=(",", ":")
).encode()

_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$")
_REPOSITORY = re.compile(r"^/v2/(?P<name>.+)/(?:manifests|blobs|tags)/")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade", "authorization", "server", "date"}

Clock = Callable[[], float]


@dataclass(frozen=True)
class Policy:
    """One published Docker Hub pull limit: pulls per sliding window, anonymous and per account.

    `ipv6_prefix`: anonymous IPv6 clients are counted per network of this length (128: per address).
    """

    name: str
    window: float
    anonymous: int
    authenticated: int
    ipv6_prefix: int = 128

    def anonymous_identity(self, address: str) -> str:
        """The identity an anonymous client's pulls count against: its address, or its IPv6 network."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        if ip.version == 6 and self.ipv6_prefix < 128:
            return str(ipaddress.ip_network(f"{ip}/{self.ipv6_prefix}", strict=False).network_address)
        return str(ip)


# pulls.md (docker/docs commit 000a96d), the limit in force: "Pull rate limit per 6 hours", "Personal
# (authenticated) 200", "Unauthenticated Users 100 per IPv4 address or IPv6 /64 subnet".
SIX_HOURS = Policy("100/200 per 6 h", 6 * 3600, 100, 200, ipv6_prefix=64)
# usage/_index.md (docker/docs commit 0d14e0d), announced for April 2025 and not enforced: per hour,
# "Personal (authenticated) 100", "Unauthenticated users 10 per IPv4 address or IPv6 /64 subnet".
HOURLY = Policy("10/100 per hour", 3600, 10, 100, ipv6_prefix=64)
POLICIES = (SIX_HOURS, HOURLY)


class ManualClock:
    """A clock the caller moves: the simulation sets it to each event's simulated time."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def set(self, now: float) -> None:
        self.now = float(now)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Usage:
    """What one identity did; `manifest_gets` are the counted pulls."""

    manifest_gets: int = 0
    manifest_heads: int = 0
    throttled: int = 0
    bytes_served: int = 0


@dataclass(frozen=True)
class Pull:
    """One manifest GET as the limiter saw it: counted (2xx), throttled (429) or neither (404...)."""

    time: float
    identity: str
    repository: str
    reference: str
    status: int
    digest: str | None


@dataclass(frozen=True)
class Quota:
    identity: str
    authenticated: bool
    limit: int
    remaining: int


class SlidingWindow:
    """Pull timestamps per identity; a pull leaves the window `window` seconds after it was made."""

    def __init__(self, window: float, clock: Clock) -> None:
        self.window = window
        self.clock = clock
        self._stamps: dict[str, deque[float]] = defaultdict(deque)

    def used(self, identity: str) -> int:
        stamps = self._stamps[identity]
        horizon = self.clock() - self.window
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        return len(stamps)

    def take(self, identity: str, limit: int) -> float | None:
        """Count a pull if the identity has quota left; the stamp lets a failed pull be handed back."""
        if self.used(identity) >= limit:
            return None
        stamp = self.clock()
        self._stamps[identity].append(stamp)
        return stamp

    def give_back(self, identity: str, stamp: float) -> None:
        stamps = self._stamps[identity]
        if stamp in stamps:
            stamps.remove(stamp)


@dataclass
class _Caller:
    identity: str
    authenticated: bool


class Limiter:
    """The rate-limited "Docker Hub": start it in front of a running registry (`upstream` host:port).

    `users` maps user name to password (access token); their pulls count against the policy's
    `authenticated` limit, anonymous pulls against its `anonymous` one. Pushes and other writes
    pass through uncounted, but tests push straight to the registry behind it.
    """

    def __init__(self, upstream: str, *, users: dict[str, str] | None = None, policy: Policy = SIX_HOURS,
                 clock: Clock | None = None) -> None:
        self.upstream = upstream
        self.users = dict(users or {})
        self.policy = policy
        self.window = policy.window
        self.clock: Clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._counter = SlidingWindow(self.window, self.clock)
        self._usage: dict[str, Usage] = defaultdict(Usage)
        self._pulls: list[Pull] = []
        self._tokens: dict[str, str | None] = {}
        self._active = 0
        self._last_seen = time.monotonic()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.host = ""
        self.url = ""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Limiter:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.limiter = self
        self._server = server
        self.host = f"127.0.0.1:{server.server_address[1]}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="limiter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Limiter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- counters for tests and the simulation --------------------------------------------------

    def usage(self) -> dict[str, Usage]:
        """Per identity: counted manifest GETs, free HEADs, 429s and body bytes served."""
        with self._lock:
            return {identity: replace(usage) for identity, usage in self._usage.items()}

    def pulls(self) -> list[Pull]:
        """Every manifest GET so far, oldest first, with its status and the digest served."""
        with self._lock:
            return list(self._pulls)

    def quota(self, identity: str) -> Quota:
        authenticated = identity in self.users
        limit = self._limit(authenticated)
        with self._lock:
            return Quota(identity, authenticated, limit, max(0, limit - self._counter.used(identity)))

    def wait_idle(self, quiet: float = 0.1, timeout: float = 5.0) -> bool:
        """Wait (real time) until no request has been in flight for `quiet` seconds: a pull-through
        cache keeps fetching blobs in the background after it answered its client."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = self._active == 0 and time.monotonic() - self._last_seen >= quiet
            if idle:
                return True
            time.sleep(quiet / 4)
        return False

    def busy(self, delta: int) -> None:
        with self._lock:
            self._active += delta
            self._last_seen = time.monotonic()

    def reset(self) -> None:
        """Forget counts and history (tokens stay valid)."""
        with self._lock:
            self._counter = SlidingWindow(self.window, self.clock)
            self._usage.clear()
            self._pulls.clear()

    # -- used by the handler --------------------------------------------------------------------

    def issue_token(self, authorization: str | None) -> str | None:
        """A token for the Basic credentials (or an anonymous one); None when they are wrong."""
        user = None
        if authorization:
            user = self._basic_user(authorization)
            if user is None:
                return None
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = user
        return token

    def caller(self, authorization: str | None, address: str) -> _Caller | None:
        """Who is asking, or None when the request carries no credentials the limiter accepts."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            with self._lock:
                if value not in self._tokens:
                    return None
                user = self._tokens[value]
        elif scheme.lower() == "basic":
            user = self._basic_user(authorization)
            if user is None:
                return None
        else:
            return None
        return _Caller(user, True) if user else _Caller(self.policy.anonymous_identity(address), False)

    def _limit(self, authenticated: bool) -> int:
        return self.policy.authenticated if authenticated else self.policy.anonymous

    def admit_get(self, caller: _Caller) -> float | None:
        """Reserve one pull for a manifest GET; None when the identity is past its limit."""
        limit = self._limit(caller.authenticated)
        with self._lock:
            return self._counter.take(caller.identity, limit)

    def give_back(self, caller: _Caller, stamp: float) -> None:
        with self._lock:
            self._counter.give_back(caller.identity, stamp)

    def peek(self, caller: _Caller) -> tuple[int, int]:
        """(limit, remaining) for the caller, counting nothing."""
        limit = self._limit(caller.authenticated)
        with self._lock:
            return limit, max(0, limit - self._counter.used(caller.identity))

    def record_get(self, caller: _Caller, name: str, reference: str, status: int, digest: str | None) -> None:
        with self._lock:
            usage = self._usage[caller.identity]
            if status == 429:
                usage.throttled += 1
            elif 200 <= status < 300:
                usage.manifest_gets += 1
            self._pulls.append(Pull(self.clock(), caller.identity, name, reference, status, digest))

    def record_head(self, caller: _Caller) -> None:
        with self._lock:
            self._usage[caller.identity].manifest_heads += 1

    def record_bytes(self, caller: _Caller, count: int) -> None:
        with self._lock:
            self._usage[caller.identity].bytes_served += count

    def _basic_user(self, authorization: str) -> str | None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        expected = self.users.get(user)
        return user if expected is not None and secrets.compare_digest(expected, password) else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    limiter: Limiter

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up is not news
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "limiter"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    @property
    def limiter(self) -> Limiter:
        return self.server.limiter

    def log_message(self, format: str, *args: object) -> None:
        pass  # the simulation makes thousands of requests; counters say what happened

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_GET

    def _handle(self) -> None:
        self.limiter.busy(+1)
        try:
            self._dispatch()
        finally:
            self.limiter.busy(-1)

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        if path == "/token":
            self._token()
            return
        caller = self.limiter.caller(self.headers.get("Authorization"), self._client_address())
        if caller is None:
            self._challenge(path)
            return
        manifest = _MANIFEST.match(path)
        if not manifest or self.command not in ("GET", "HEAD"):
            self._forward(caller, lambda status, digest: {})
            return
        if self.command == "HEAD":
            self.limiter.record_head(caller)
            self._forward(caller, lambda status, digest: self._rate_headers(caller, *self.limiter.peek(caller)))
            return
        stamp = self.limiter.admit_get(caller)
        if stamp is None:
            self.limiter.record_get(caller, manifest["name"], manifest["reference"], 429, None)
            limit, _ = self.limiter.peek(caller)
            self._send(429, TOO_MANY_REQUESTS_BODY, self._rate_headers(caller, limit, 0), caller)
            return

        def settle(status: int, digest: str | None) -> dict[str, str]:
            # Recorded before the answer goes out, so a client that has it can read the counters.
            if not 200 <= status < 300:
                self.limiter.give_back(caller, stamp)  # only a manifest actually served is a pull
            self.limiter.record_get(caller, manifest["name"], manifest["reference"], status, digest)
            return self._rate_headers(caller, *self.limiter.peek(caller))

        self._forward(caller, settle)

    def _client_address(self) -> str:
        forwarded = self.headers.get(CLIENT_IP_HEADER)
        if forwarded:
            return forwarded.split(",")[0].strip()
        return str(self.client_address[0])

    def _rate_headers(self, caller: _Caller, limit: int, remaining: int) -> dict[str, str]:
        window = int(self.limiter.window)
        return {
            "ratelimit-limit": f"{limit};w={window}",
            "ratelimit-remaining": f"{remaining};w={window}",
            "docker-ratelimit-source": caller.identity,
        }

    def _token(self) -> None:
        self._drain_body()
        token = self.limiter.issue_token(self.headers.get("Authorization"))
        if token is None:
            body = json.dumps({"details": "incorrect username or password"}).encode()
            self._send(401, body, {}, None)
            return
        body = json.dumps({"token": token, "access_token": token, "expires_in": 3600}).encode()
        self._send(200, body, {}, None)

    def _challenge(self, path: str) -> None:
        self._drain_body()
        host = self.headers.get("Host") or self.limiter.host
        challenge = f'Bearer realm="http://{host}/token",service="{SERVICE}"'
        repository = _REPOSITORY.match(path)
        if repository:
            challenge += f',scope="repository:{repository["name"]}:pull"'
        body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required",
                                       "detail": None}]}).encode()
        self._send(401, body, {"WWW-Authenticate": challenge}, None)

    def _send(self, status: int, body: bytes, headers: dict[str, str], caller: _Caller | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            if caller:
                self.limiter.record_bytes(caller, len(body))
            self.wfile.write(body)

    def _drain_body(self) -> None:
        for _ in request_body(self):
            pass

    def _forward(self, caller: _Caller, extra: Callable[[int, str | None], dict[str, str]]) -> None:
        """Send the request on to the registry and stream its answer back.

        `extra(status, digest)` gives headers to add once the registry has answered.
        """
        # A list, not a dict: Go clients send one Accept header per media type.
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        has_body = chunked or int(self.headers.get("Content-Length") or 0) > 0
        upstream = http.client.HTTPConnection(self.limiter.upstream, timeout=60)
        answered = False
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                upstream.putheader(name, value)
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
            if has_body:
                for chunk in request_body(self):
                    upstream.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                if chunked:
                    upstream.send(b"0\r\n\r\n")
            response = upstream.getresponse()
            answered = True
            self.send_response(response.status)
            length = response.getheader("Content-Length")
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            for name, value in extra(response.status, response.getheader("Docker-Content-Digest")).items():
                self.send_header(name, value)
            stream_chunked = length is None and self.command != "HEAD" and response.status not in (204, 304)
            if stream_chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                while chunk := response.read(CHUNK):
                    self.limiter.record_bytes(caller, len(chunk))
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if stream_chunked else chunk)
                if stream_chunked:
                    self.wfile.write(b"0\r\n\r\n")
        except (ConnectionError, TimeoutError, http.client.HTTPException):
            if not answered:
                extra(502, None)
                self._send(502, b'{"errors":[{"code":"UNAVAILABLE","message":"registry unreachable"}]}', {}, None)
            self.close_connection = True
        finally:
            upstream.close()

