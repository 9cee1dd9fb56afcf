"""Synthetic images built in memory and pushed over the distribution API (no podman, no Docker).

Independent of the engine on purpose: the engine's tests compare against what this module pushed.
Same `seed` gives the same bytes (so two pushes share blobs, as mount tests need); another seed
gives different content. `push_large_image` streams one big layer from a generator so a 1 GiB
layer never sits in memory.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import urllib3

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"
KINDS = ("oci-index", "docker-list", "oci-manifest", "docker-v2")
_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def encode(document: dict[str, Any]) -> bytes:
    # Indented like buildx output, so tests notice any re-serialization (it would change the digest).
    return json.dumps(document, indent=3).encode()


def split_platform(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    out = {"architecture": parts[1], "os": parts[0]}
    if len(parts) > 2:
        out["variant"] = parts[2]
    return out


class Pusher:
    """Minimal distribution client for tests: pushes blobs and manifests, handles Basic and Bearer."""

    def __init__(self, registry: str, *, username: str | None = None, password: str | None = None) -> None:
        self.base = registry.rstrip("/") if "://" in registry else f"http://{registry}"
        self.http = urllib3.PoolManager(maxsize=8, retries=False)
        self.username, self.password = username, password
        self.token: dict[str, str] = {}

    def _basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def request(self, method: str, url: str, repository: str, **kwargs: Any) -> urllib3.BaseHTTPResponse:
        url = url if "://" in url else self.base + url
        headers = dict(kwargs.pop("headers", {}))
        for _ in range(2):
            if repository in self.token:
                headers["Authorization"] = self.token[repository]
            response = self.http.request(method, url, headers=headers, redirect=False, **kwargs)
            challenge = response.headers.get("WWW-Authenticate", "")
            if response.status != 401 or not challenge or "Authorization" in headers:
                return response
            self.token[repository] = self._authorize(challenge, repository)
        return response

    def _authorize(self, challenge: str, repository: str) -> str:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            return self._basic()
        fields = dict(part.split("=", 1) for part in params.split('",') if "=" in part)
        fields = {k.strip(): v.strip().strip('"') for k, v in fields.items()}
        query = {"service": fields.get("service", ""), "scope": f"repository:{repository}:pull,push"}
        headers = {"Authorization": self._basic()} if self.username else {}
        response = self.http.request("GET", fields["realm"], fields=query, headers=headers)
        if response.status != 200:
            raise RuntimeError(f"token endpoint said {response.status}: {response.data[:200]!r}")
        body = response.json()
        return "Bearer " + (body.get("token") or body["access_token"])

    def has_blob(self, repository: str, digest: str) -> bool:
        return self.request("HEAD", f"/v2/{repository}/blobs/{digest}", repository).status == 200

    def blob(self, repository: str, data: bytes) -> str:
        digest = digest_of(data)
        if self.has_blob(repository, digest):
            return digest
        location = self._start_upload(repository)
        sep = "&" if "?" in location else "?"
        response = self.request("PUT", f"{location}{sep}digest={digest}", repository, body=data,
                                headers={"Content-Type": "application/octet-stream"})
        self._check(response, 201, f"PUT blob {digest}")
        return digest

    def blob_stream(self, repository: str, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Upload a blob from a stream of chunks (chunked PATCH), hashing as it goes."""
        sha, size = hashlib.sha256(), 0

        def counted() -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                sha.update(chunk)
                size += len(chunk)
                yield chunk

        location = self._start_upload(repository)
        response = self.request("PATCH", location, repository, body=counted(), chunked=True,
                                headers={"Content-Type": "application/octet-stream"})
        self._check(response, 202, "PATCH blob")
        location = response.headers["Location"]
        digest = "sha256:" + sha.hexdigest()
        sep = "&" if "?" in location else "?"
        self._check(self.request("PUT", f"{location}{sep}digest={digest}", repository), 201, "PUT blob")
        return digest, size

    def _start_upload(self, repository: str) -> str:
        response = self.request("POST", f"/v2/{repository}/blobs/uploads/", repository)
        self._check(response, 202, "POST upload")
        return str(response.headers["Location"])

    def manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        response = self.request("PUT", f"/v2/{repository}/manifests/{reference}", repository, body=body,
                                headers={"Content-Type": media_type})
        self._check(response, 201, f"PUT manifest {repository}:{reference}")
        return digest_of(body)

    def get_manifest(self, repository: str, reference: str) -> bytes:
        response = self.request("GET", f"/v2/{repository}/manifests/{reference}", repository,
                                headers={"Accept": _ACCEPT})
        self._check(response, 200, f"GET manifest {repository}:{reference}")
        return bytes(response.data)

    @staticmethod
    def _check(response: urllib3.BaseHTTPResponse, status: int, what: str) -> None:
        if response.status != status:
            raise RuntimeError(f"{what}: HTTP {response.status}: {response.data[:300]!r}")


def _layer(rng: random.Random, index: int, size: int) -> tuple[bytes, str]:
    """A gzipped tar holding one file of random bytes; returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"layer-{index}.bin")
        info.size, info.mtime = size, 0
        tar.addfile(info, io.BytesIO(rng.randbytes(size)))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, compresslevel=1, mtime=0), digest_of(tar_bytes)


def _image(pusher: Pusher, repository: str, platform: str, *, docker: bool, layers: int, layer_size: int,
           rng: random.Random, seed: int) -> bytes:
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    blobs = [_layer(rng, i, layer_size) for i in range(layers)]
    config = {
        "architecture": split_platform(platform)["architecture"],
        "os": split_platform(platform)["os"],
        **({"variant": split_platform(platform)["variant"]} if platform.count("/") == 2 else {}),
        "config": {"Env": [f"SEED={seed}", f"PLATFORM={platform}"]},
        "created": "2024-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in blobs]},
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    for blob, _ in blobs:
        pusher.blob(repository, blob)
    pusher.blob(repository, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config_bytes),
        "layers": [descriptor(layer_type, blob) for blob, _ in blobs],
    }
    return encode(manifest)


def _attestation(pusher: Pusher, repository: str, subject: str, platform: str, seed: int) -> bytes:
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{"name": f"pkg:docker/{repository}?platform={platform}", "digest": {"sha256": subject[7:]}}],
        "predicate": {"spdxVersion": "SPDX-2.3", "name": f"sbom-{seed}", "packages": []},
    }
    provenance = {**statement, "predicateType": "https://slsa.dev/provenance/v0.2",
                  "predicate": {"builder": {"id": ""}, "buildType": "https://mobyproject.org/buildkit@v1"}}
    layers = [json.dumps(doc).encode() for doc in (statement, provenance)]
    config = json.dumps({"architecture": "unknown", "os": "unknown", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(x) for x in layers]}}).encode()
    for blob in (*layers, config):
        pusher.blob(repository, blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [
            descriptor(IN_TOTO, layers[0], annotations={"in-toto.io/predicate-type": "https://spdx.dev/Document"}),
            descriptor(IN_TOTO, layers[1],
                       annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}),
        ],
    }
    return encode(manifest)


def push_image(registry: str, repository: str, tag: str, *, kind: str = "oci-index",
               platforms: Sequence[str] = ("linux/amd64", "linux/arm64"), layers: int = 2, layer_size: int = 4096,
               attestations: bool = False, seed: int = 0, username: str | None = None,
               password: str | None = None) -> str:
    """Build a synthetic image and push it as `repository:tag`; returns the top-level manifest digest.

    `registry` is `host:port` or a base URL. Children are pushed before parents, like any client.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if attestations and kind != "oci-index":
        raise ValueError("attestation manifests need an OCI index (buildx writes them that way)")
    pusher = Pusher(registry, username=username, password=password)
    rng = random.Random(f"{seed}")
    docker = kind.startswith("docker")
    if kind in ("oci-manifest", "docker-v2"):
        body = _image(pusher, repository, platforms[0], docker=docker, layers=layers, layer_size=layer_size,
                      rng=rng, seed=seed)
        return pusher.manifest(repository, tag, body, DOCKER_MANIFEST if docker else OCI_MANIFEST)
    entries: list[dict[str, Any]] = []
    attests: list[dict[str, Any]] = []
    child_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    for platform in platforms:
        body = _image(pusher, repository, platform, docker=docker, layers=layers, layer_size=layer_size,
                      rng=rng, seed=seed)
        digest = pusher.manifest(repository, digest_of(body), body, child_type)
        entries.append(descriptor(child_type, body, platform=split_platform(platform)))
        if attestations:
            attest = _attestation(pusher, repository, digest, platform, seed)
            pusher.manifest(repository, digest_of(attest), attest, OCI_MANIFEST)
            attests.append(descriptor(OCI_MANIFEST, attest, platform={"architecture": "unknown", "os": "unknown"},
                                      annotations={"vnd.docker.reference.digest": digest,
                                                   "vnd.docker.reference.type": "attestation-manifest"}))
    index = {"schemaVersion": 2, "mediaType": DOCKER_LIST if docker else OCI_INDEX, "manifests": entries + attests}
    return pusher.manifest(repository, tag, encode(index), DOCKER_LIST if docker else OCI_INDEX)


def layer_chunks(size: int, *, seed: int = 0, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """`size` pseudo-random bytes in chunks, generated on the fly (one chunk in memory at a time)."""
    block = random.Random(f"large-{seed}").randbytes(chunk_size)
    sent, index = 0, 0
    while sent < size:
        # A counter per chunk keeps chunks distinct without generating fresh randomness for each.
        piece = index.to_bytes(8, "big") + block[8:]
        piece = piece[: min(chunk_size, size - sent)]
        yield piece
        sent += len(piece)
        index += 1


def push_large_image(registry: str, repository: str, tag: str, *, size: int = 1 << 30, seed: int = 0,
                     kind: str = "docker-v2", username: str | None = None, password: str | None = None) -> str:
    """Push an image whose single (uncompressed) layer of `size` bytes is streamed from a generator."""
    pusher = Pusher(registry, username=username, password=password)
    docker = kind == "docker-v2"
    layer_digest, layer_size = pusher.blob_stream(repository, layer_chunks(size, seed=seed))
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "created": "2024-01-01T00:00:00Z",
                         "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    pusher.blob(repository, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar" if docker else OCI_LAYER_TAR,
                    "digest": layer_digest, "size": layer_size}],
    }
    return pusher.manifest(repository, tag, encode(manifest), DOCKER_MANIFEST if docker else OCI_MANIFEST)


EMPTY = "application/vnd.oci.empty.v1+json"
SPDX = "application/spdx+json"


def push_artifact(registry: str, repository: str, subject: str, data: bytes, *, artifact_type: str = SPDX,
                  annotations: dict[str, str] | None = None, username: str | None = None,
                  password: str | None = None) -> str:
    """Push an OCI 1.1 artifact that refers to the manifest `subject` (image-spec 1.1: `artifactType`, the
    empty config, one layer, `subject`) as a client following the distribution spec does: by digest, and,
    when the registry answers without `OCI-Subject`, appended to the referrers tag `sha256-<hex>`.
    Returns the artifact manifest's digest."""
    pusher = Pusher(registry, username=username, password=password)
    head = pusher.request("HEAD", f"/v2/{repository}/manifests/{subject}", repository, headers={"Accept": _ACCEPT})
    Pusher._check(head, 200, f"HEAD {repository}@{subject}")
    pusher.blob(repository, b"{}")
    pusher.blob(repository, data)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                "config": descriptor(EMPTY, b"{}"), "layers": [descriptor(artifact_type, data)],
                "subject": {"mediaType": head.headers["Content-Type"], "digest": subject,
                            "size": int(head.headers["Content-Length"])},
                "annotations": {"org.opencontainers.image.created": "2026-12-01T00:00:00Z", **(annotations or {})}}
    body = encode(manifest)
    digest = digest_of(body)
    response = pusher.request("PUT", f"/v2/{repository}/manifests/{digest}", repository, body=body,
                              headers={"Content-Type": OCI_MANIFEST})
    Pusher._check(response, 201, f"PUT artifact {digest}")
    if not response.headers.get("OCI-Subject"):
        tag = subject.replace(":", "-")
        found = pusher.request("GET", f"/v2/{repository}/manifests/{tag}", repository, headers={"Accept": OCI_INDEX})
        index = json.loads(found.data) if found.status == 200 else {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                                     "manifests": []}
        index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
                                   "artifactType": artifact_type, "annotations": manifest["annotations"]})
        pusher.manifest(repository, tag, encode(index), OCI_INDEX)
    return digest
