"""A client for the OCI distribution API: one for source and destination registries.

urllib3 with a connection pool per host; manifests are returned and sent as the exact bytes the
registry served, so digests survive; blobs stream through `BlobReader`, which verifies as it reads.
Loopback registries speak plain HTTP, everything else HTTPS (`reference.base_url`).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3

from ecr_mirror_cdk.reference import DIGEST_RE, base_url

from .auth import Authenticator, Scope
from .blob_reader import BlobReader
from .errors import DigestMismatch, ManifestError, RegistryError, TooManyRequests
from .manifests import DOCKER_LIST, DOCKER_MANIFEST, OCI_ARTIFACT, OCI_INDEX, OCI_MANIFEST
from .ratelimit import PullBudget, RateLimit, retry_after

MANIFEST_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST, OCI_ARTIFACT)
_ACCEPT = ", ".join(MANIFEST_TYPES)

_REDIRECTS = (301, 302, 303, 307, 308)
_TRANSIENT = (502, 503, 504)
_MAX_REDIRECTS = 5
_MIN_RETRY_WAIT = 1.0


@dataclass(frozen=True)
class ManifestInfo:
    digest: str
    media_type: str
    size: int
    rate_limit: RateLimit | None


@dataclass(frozen=True)
class Stored:
    """A manifest PUT: its digest, and the `OCI-Subject` header of the answer (None: the registry did not
    say it processed the manifest's `subject`; distribution spec 1.1, "Pushing Manifests with Subject")."""

    digest: str
    subject: str | None = None


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _without_query(url: str) -> str:
    """A URL fit for an error message: a blob redirect's query is a presigned credential (X-Amz-*)."""
    return urllib.parse.urlsplit(url)._replace(query="", fragment="").geturl()


def _error_text(response: urllib3.BaseHTTPResponse) -> str:
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or response.data[:200].decode()
    except Exception:  # noqa: BLE001 - error bodies are free-form; any failure just means no detail
        return ""


class RegistryClient:
    """The distribution API of one registry host, with auth, pooling and bounded, honest retries.

    - 401: learn the challenge, authenticate, retry once.
    - 429: wait `Retry-After` (at least a second) while the total wait stays within `max_retry_wait`,
      else raise TooManyRequests at once; without `Retry-After` raise at once (never blind retries).
    - Connection errors and 502/503/504 on idempotent requests: up to `connection_retries` retries.
    `counters` counts requests sent by (method, kind), kind in manifest, referrers, blob, upload, mount,
    tags, token.
    """

    def __init__(self, host: str, *, username: str | None = None, password: str | None = None,
                 timeout: float = 60, pool_size: int = 16, max_retry_wait: float = 60.0,
                 connection_retries: int = 2, chunked_upload: bool = False,
                 credentials_from: str | None = None) -> None:
        self.host = host
        self.chunked_upload = chunked_upload
        self.base = base_url(host)
        self.timeout = urllib3.Timeout(connect=min(timeout, 10.0), read=timeout)
        self.max_retry_wait = max_retry_wait
        self.connection_retries = connection_retries
        self.http = urllib3.PoolManager(num_pools=8, maxsize=pool_size, retries=False)
        self.counters: Counter[tuple[str, str]] = Counter()
        self._counter_lock = threading.Lock()
        self.auth = Authenticator(self.http, username=username, password=password, timeout=self.timeout,
                                  count=self._count, credentials_from=credentials_from)
        self.rate_limit: RateLimit | None = None  # the latest seen, for metrics
        self.budget = PullBudget()

    def __repr__(self) -> str:
        return f"RegistryClient({self.host!r})"

    def _count(self, method: str, kind: str) -> None:
        with self._counter_lock:
            self.counters[(method, kind)] += 1

    # -- transport ---------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return path if "://" in path else self.base + path

    def _same_origin(self, url: str) -> bool:
        return urllib.parse.urlsplit(url)[:2] == urllib.parse.urlsplit(self.base)[:2]

    def request(self, method: str, path: str, *, kind: str, scopes: Sequence[Scope] = (),
                headers: dict[str, str] | None = None, body: bytes | Iterable[bytes] | None = None,
                stream: bool = False, idempotent: bool | None = None,
                fields: Sequence[tuple[str, str]] | None = None) -> urllib3.BaseHTTPResponse:
        """One API call; the caller releases a streamed response. Redirects are not followed here."""
        url = self._url(path)
        if fields:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(fields)
        replayable = body is None or isinstance(body, bytes)
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT") and replayable
        authorize = self._same_origin(url)
        waited = 0.0
        failures = 0
        reauthorized = False
        while True:
            sent_headers = dict(headers or {})
            credential = self.auth.header(scopes) if authorize else None
            if credential:
                sent_headers["Authorization"] = credential
            self._count(method, kind)
            try:
                response = self.http.request(
                    method, url, body=body, headers=sent_headers, preload_content=not stream,
                    decode_content=False, redirect=False, retries=False, timeout=self.timeout)
            except urllib3.exceptions.HTTPError as err:
                if idempotent and failures < self.connection_retries:
                    failures += 1
                    time.sleep(0.1 * 2**failures)
                    continue
                raise RegistryError(f"{method} {_without_query(url)}: {err}") from err
            status = response.status
            if status == 401 and authorize and replayable:
                challenge = response.headers.get("WWW-Authenticate")
                self._discard(response)
                if not reauthorized and self.auth.challenged(challenge, scopes, credential):
                    reauthorized = True
                    continue
                # Refused again after logging in: name the credential, so the message points at its secret.
                raise RegistryError(f"{method} {_without_query(url)}: unauthorized with {self.auth.credential}", 401)
            if status == 429:
                delay = retry_after(response.headers.get("Retry-After"))
                self._discard(response)
                # `Retry-After: 0` still costs a second of the budget, or a 429 storm never ends.
                pause = max(delay, _MIN_RETRY_WAIT) if delay is not None else None
                if pause is None or not replayable or waited + pause > self.max_retry_wait:
                    hint = f" (Retry-After {delay:.0f} s)" if delay is not None else ""
                    raise TooManyRequests(f"{method} {_without_query(url)}: too many requests{hint}", delay)
                time.sleep(pause)
                waited += pause
                continue
            if status in _TRANSIENT and idempotent and failures < self.connection_retries:
                self._discard(response)
                failures += 1
                time.sleep(0.1 * 2**failures)
                continue
            return response

    @staticmethod
    def _discard(response: urllib3.BaseHTTPResponse) -> None:
        response.drain_conn()
        response.release_conn()

    @staticmethod
    def _fail(response: urllib3.BaseHTTPResponse, what: str) -> RegistryError:
        detail = _error_text(response)
        return RegistryError(f"{what}: HTTP {response.status}{': ' + detail if detail else ''}", response.status)

    # -- manifests ---------------------------------------------------------------------------------

    def _manifest_info(self, response: urllib3.BaseHTTPResponse, digest: str, size: int) -> ManifestInfo:
        rate = RateLimit.from_headers(response.headers)
        if rate is not None:
            self.rate_limit = rate
            self.budget.seen(rate)
        media_type = (response.headers.get("Content-Type") or "").split(";", 1)[0].strip()
        return ManifestInfo(digest, media_type, size, rate)

    def head_manifest(self, repository: str, reference: str) -> ManifestInfo | None:
        """Digest, type and size of a manifest with a HEAD (free on Docker Hub); None when absent."""
        response = self.request("HEAD", f"/v2/{repository}/manifests/{reference}", kind="manifest",
                                scopes=[(repository, "pull")], headers={"Accept": _ACCEPT})
        if response.status == 404:
            return None
        if response.status != 200:
            raise self._fail(response, f"HEAD {repository}:{reference}")
        digest = response.headers.get("Docker-Content-Digest")
        if not digest and DIGEST_RE.fullmatch(reference):
            digest = reference
        if not digest:
            raise RegistryError(f"HEAD {repository}:{reference}: no Docker-Content-Digest header")
        return self._manifest_info(response, digest, int(response.headers.get("Content-Length") or 0))

    def get_manifest(self, repository: str, reference: str, *, floor: int | None = None) -> tuple[bytes, ManifestInfo]:
        """The manifest's exact bytes; the digest is computed from them and checked against the
        reference (when a digest) and the registry's Docker-Content-Digest header.

        `floor`: raise QuotaReserved instead of sending the GET when the registry's last stated
        `ratelimit-remaining`, less the GETs in flight, is not above it.
        """
        with self.budget.pull(floor, f"{repository}:{reference}") as answered:
            response = self.request("GET", f"/v2/{repository}/manifests/{reference}", kind="manifest",
                                    scopes=[(repository, "pull")], headers={"Accept": _ACCEPT})
            answered(RateLimit.from_headers(response.headers))
        if response.status != 200:
            raise self._fail(response, f"GET {repository}:{reference}")
        body = bytes(response.data)
        claimed = reference if DIGEST_RE.fullmatch(reference) else response.headers.get("Docker-Content-Digest")
        algorithm = claimed.split(":", 1)[0] if claimed and ":" in claimed else "sha256"
        try:
            digest = compute_digest(body, algorithm)
        except ValueError as err:
            raise ManifestError(f"{repository}:{reference}: unsupported digest algorithm {algorithm!r}") from err
        if claimed and claimed != digest:
            raise DigestMismatch(f"manifest {repository}:{reference}: content hashes to {digest}, not {claimed}")
        return body, self._manifest_info(response, digest, len(body))

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Store `body` as-is under `reference` (tag or digest); returns its digest."""
        return self.store_manifest(repository, reference, body, media_type).digest

    def store_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> Stored:
        """put_manifest, with the registry's `OCI-Subject` answer."""
        response = self.request("PUT", f"/v2/{repository}/manifests/{reference}", kind="manifest",
                                scopes=[(repository, "pull,push")], body=body,
                                headers={"Content-Type": media_type})
        if response.status not in (200, 201):
            raise self._fail(response, f"PUT {repository}:{reference}")
        digest = compute_digest(body)
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise DigestMismatch(f"PUT {repository}:{reference}: registry stored {stored}, sent {digest}")
        return Stored(digest, response.headers.get("OCI-Subject"))

    def referrers_index(self, repository: str, digest: str, *, floor: int | None = None) -> list[Any] | None:
        """The descriptors the referrers API lists for `digest`, every `Link` page followed; None when the
        registry answers 404, as one without the API does ("If the registry supports the referrers API, the
        registry MUST NOT return a 404 Not Found", distribution spec 1.1, "Listing Referrers").

        Docker's documentation counts manifest GETs as pulls and does not name this endpoint, so it is
        reserved as one (`floor`, as in get_manifest): the budget may overestimate, never under."""
        manifests: list[Any] = []
        seen: set[str] = set()
        path: str | None = f"/v2/{repository}/referrers/{digest}"
        while path:
            if self._url(path) in seen:
                raise RegistryError(f"GET referrers of {repository}@{digest}: pagination loops back to {path}")
            seen.add(self._url(path))
            with self.budget.pull(floor, f"referrers of {repository}@{digest}") as answered:
                response = self.request("GET", path, kind="referrers", scopes=[(repository, "pull")],
                                        headers={"Accept": OCI_INDEX})
                answered(RateLimit.from_headers(response.headers))
            if response.status == 404 and len(seen) == 1:  # the first page: no such API
                return None
            if response.status != 200:
                raise self._fail(response, f"GET referrers of {repository}@{digest}")
            try:
                page = response.json().get("manifests")
            except (ValueError, AttributeError):
                page = None
            if not isinstance(page, list):
                raise ManifestError(f"referrers of {repository}@{digest}: the answer is not an image index")
            manifests.extend(page)
            path = _next_link(response.headers.get("Link"), self._url(path))
        return manifests

    def list_tags(self, repository: str, *, page_size: int = 1000) -> list[str]:
        """Every tag, following `Link` pagination; RegistryError(status=404) for an unknown repository."""
        tags: list[str] = []
        seen: set[str] = set()
        path: str | None = f"/v2/{repository}/tags/list?n={page_size}"
        while path:
            if self._url(path) in seen:  # a Link that points back would keep a Lambda busy until its timeout
                raise RegistryError(f"GET tags of {repository}: pagination loops back to {path}")
            seen.add(self._url(path))
            response = self.request("GET", path, kind="tags", scopes=[(repository, "pull")])
            if response.status != 200:
                raise self._fail(response, f"GET tags of {repository}")
            tags.extend(response.json().get("tags") or [])
            path = _next_link(response.headers.get("Link"), self._url(path))
        return tags

    # -- blobs -------------------------------------------------------------------------------------

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", kind="blob",
                                scopes=[(repository, "pull")])
        if response.status in (200, 307, 302):
            return True
        if response.status == 404:
            return False
        raise self._fail(response, f"HEAD blob {repository}@{digest}")

    def open_blob(self, repository: str, digest: str, size: int | None = None) -> BlobReader:
        """Stream a blob; redirects (a CDN) are followed without sending our credentials there."""
        url = f"/v2/{repository}/blobs/{digest}"
        kind = "blob"
        for _ in range(_MAX_REDIRECTS + 1):
            response = self.request("GET", url, kind=kind, scopes=[(repository, "pull")], stream=True)
            if response.status in _REDIRECTS and response.headers.get("Location"):
                url = urllib.parse.urljoin(self._url(url), response.headers["Location"])
                self._discard(response)
                kind = "redirect"
                continue
            if response.status != 200:
                error = self._fail(response, f"GET blob {repository}@{digest}")
                self._discard(response)
                raise error
            return BlobReader(response, digest, size)
        raise RegistryError(f"GET blob {repository}@{digest}: more than {_MAX_REDIRECTS} redirects")

    def start_upload(self, repository: str, *, mount: str | None = None,
                     from_repository: str | None = None) -> str | None:
        """Open an upload session and return its URL; with `mount`, None when the blob got mounted."""
        mounting = mount is not None and from_repository is not None
        scopes = [(repository, "pull,push")] + ([(from_repository or "", "pull")] if mounting else [])
        # An upload session has no effect until committed, so retrying its creation is safe.
        response = self.request("POST", f"/v2/{repository}/blobs/uploads/", kind="mount" if mounting else "upload",
                                scopes=scopes, idempotent=True, headers={"Content-Length": "0"},
                                fields=[("mount", mount or ""), ("from", from_repository or "")] if mounting else None)
        if response.status == 201 and mounting:
            return None
        if mounting and response.status in (400, 404, 405, 501):
            # A registry that does not implement mounting (or this form of it): plain upload.
            self._discard(response)
            return self.start_upload(repository)
        if response.status != 202:
            raise self._fail(response, f"start upload to {repository}")
        return self._location(response)

    def upload_blob(self, repository: str, digest: str, size: int, chunks: Iterable[bytes], *,
                    location: str | None = None) -> None:
        """Stream a blob in: POST (unless `location` is an open session), then one request with the
        whole body and Content-Length: a PUT ?digest= (monolithic, as containerd pushes; the default)
        or, with `chunked_upload`, a PATCH then an empty PUT ?digest= (one part of any size, within
        ECR's part-size rules). If `chunks` raises (digest mismatch, lost source) the request is
        abandoned mid-body and the session cancelled: nothing is committed.
        """
        scopes = [(repository, "pull,push")]
        location = location or self.start_upload(repository)
        assert location is not None
        body_headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        try:
            if not self.chunked_upload:
                response = self.request("PUT", _with_digest(location, digest), kind="upload", scopes=scopes,
                                        body=chunks, headers=body_headers)
                if response.status not in (201, 204):
                    raise self._fail(response, f"upload {digest} to {repository}")
                return
            response = self.request("PATCH", location, kind="upload", scopes=scopes, body=chunks, headers=body_headers)
            if response.status != 202:
                raise self._fail(response, f"upload {digest} to {repository}")
            location = self._location(response)
        except BaseException:
            self._cancel(location, repository)
            raise
        response = self.request("PUT", _with_digest(location, digest), kind="upload", scopes=scopes,
                                headers={"Content-Length": "0"})
        if response.status not in (201, 204):
            raise self._fail(response, f"commit {digest} to {repository}")

    def _location(self, response: urllib3.BaseHTTPResponse) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError("upload response without Location", response.status)
        return urllib.parse.urljoin(self.base + "/", location)

    def _cancel(self, location: str | None, repository: str) -> None:
        """Best effort: registries expire abandoned uploads anyway (ECR cannot delete them)."""
        if not location:
            return
        with contextlib.suppress(RegistryError):
            self._discard(self.request("DELETE", location, kind="upload", scopes=[(repository, "pull,push")],
                                       stream=True, idempotent=False))


def _with_digest(location: str, digest: str) -> str:
    """The upload session URL that commits it: `?digest=` added to whatever query the registry put there."""
    return f"{location}{'&' if '?' in location else '?'}digest={urllib.parse.quote(digest)}"


def _next_link(header: str | None, current: str) -> str | None:
    """`</v2/x/tags/list?last=b&n=2>; rel="next"` -> the absolute next URL."""
    if not header:
        return None
    for part in header.split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
            return urllib.parse.urljoin(current, target.strip().strip("<>"))
    return None

