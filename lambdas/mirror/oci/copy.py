"""Digest-exact image copy between registries.

Order: blobs, then child manifests by digest, then the tag, so a tag never points at content the
destination lacks; a failure anywhere leaves the previous tag in place.

Digests: manifests move byte-for-byte, so the destination digest equals the source digest, except
when a `platforms` filter drops entries of an index. The index is then rewritten to list only the
kept platform manifests (and the attestation manifests that describe them); its digest differs
from the source's, and the rewrite records where it came from in its annotations:
`io.github.ecr-mirror.source-digest` (the source index digest) and `io.github.ecr-mirror.platforms`
(the filter). `recorded_source_digest` reads them back with one destination GET (free), so the
planner can compare it with a source HEAD and skip unchanged filtered images without a source GET.
Single-platform manifests are copied as they are; a filter does not apply to them.

Tags that share a digest cost one source GET: `copy_image` takes every tag that pointed at the
planned digest and puts the manifest it fetched once under each.

Quota floor: given `floor`, no manifest GET is sent while the source's last stated
`ratelimit-remaining` (less the GETs in flight) is not above it; the copy stops with
QuotaReserved (a TooManyRequests) before any tag moves, whatever the plan estimated.

Interrupted (Ctrl-C: KeyboardInterrupt in the calling thread), the blob transfers in flight stop
at their next chunk and abandon their upload uncommitted; no manifest or tag is put after that.

A destination repository may not exist yet: ECR creates a mirrored repository on its first push, from
the CREATE_ON_PUSH creation template of its prefix (stacks/registry.py). Until then ECR answers a read
of it 404 NAME_UNKNOWN ("The repository with name ... does not exist in the registry"), which the
engine takes as absent: no tag, no blob, nothing to mount. The copy then pushes in `docker push`'s
order, which create on push serves: blob uploads first (a refused mount falls back to a plain upload),
manifests next, the tag last. ECR does not document which request of a push creates the repository;
the copy sends none that needs it before its first upload POST.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from ecr_mirror_cdk.reference import DIGEST_RE

from .blobs import Progress, Tally, copy_blob
from .errors import NoMatchingPlatform, RegistryError
from .manifests import (
    PLATFORMS_ANNOTATION,
    SOURCE_DIGEST_ANNOTATION,
    Descriptor,
    Manifest,
    parse_manifest,
    platform_label,
    rewrite_index,
    select,
)
from .registry import ManifestInfo, RegistryClient, compute_digest

__all__ = ["CopyResult", "Progress", "copy_content", "copy_image", "fetch", "recorded_source_digest"]

_MAX_DEPTH = 4  # an index of indexes is legal but rare; deeper nesting is refused
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class CopyResult:
    source_digest: str
    destination_digest: str
    bytes_copied: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    manifests_put: int = 0


def _run_all(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T],
             halt: threading.Event | None = None) -> list[R]:
    """Run `fn` over `items` on the pool; on the first failure cancel what has not started and raise.
    Interrupted while waiting (Ctrl-C), also set `halt`, which the transfers in flight watch."""
    futures: list[Future[R]] = [pool.submit(fn, item) for item in items]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
    except BaseException:
        if halt is not None:
            halt.set()
        _cancel(futures)
        raise
    failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception()), None)
    if failed is not None:
        _cancel(futures)
        raise failed.exception()  # type: ignore[misc]
    return [f.result() for f in futures]


def _cancel(futures: Sequence[Future[R]]) -> None:
    for future in futures:
        future.cancel()
    wait(futures)


class _Tree:
    """The manifests of one image below its top-level manifest, fetched as needed."""

    def __init__(self, client: RegistryClient, repository: str, floor: int | None = None) -> None:
        self.client = client
        self.repository = repository
        self.floor = floor

    def get(self, reference: str) -> tuple[bytes, ManifestInfo]:
        if self.floor is None:
            return self.client.get_manifest(self.repository, reference)
        return self.client.get_manifest(self.repository, reference, floor=self.floor)

    def fetch(self, descriptor: Descriptor) -> Manifest:
        body, info = self.get(descriptor.digest)
        if info.size != descriptor.size:
            raise RegistryError(f"manifest {descriptor.digest}: {info.size} bytes, descriptor says {descriptor.size}")
        return parse_manifest(body, descriptor.media_type or info.media_type, info.digest)


def _levels(pool: ThreadPoolExecutor, tree: _Tree, children: Sequence[Descriptor],
            present: Callable[[Descriptor], bool]) -> list[list[Manifest]]:
    """Child manifests to push, deepest level first; those `present` says exist are not fetched."""
    levels: list[list[Manifest]] = []
    pending = list(children)
    for _ in range(_MAX_DEPTH):
        if not pending:
            return levels[::-1]
        missing = [d for d, here in zip(pending, _run_all(pool, present, pending), strict=True) if not here]
        fetched = _run_all(pool, tree.fetch, missing)
        levels.append(fetched)
        pending = [c for m in fetched if m.is_index for c in m.children]
    raise RegistryError(f"{tree.repository}: indexes nested deeper than {_MAX_DEPTH}")


def _unique_blobs(manifests: Iterable[Manifest]) -> list[Descriptor]:
    seen: dict[str, Descriptor] = {}
    for manifest in manifests:
        for blob in manifest.blobs:
            if not blob.foreign:
                seen.setdefault(blob.digest, blob)
    # Biggest first, so the longest transfers start early and the pool drains evenly.
    return sorted(seen.values(), key=lambda b: -b.size)


def fetch(source: RegistryClient, repository: str, reference: str, floor: int | None = None) -> Manifest:
    """One manifest from the source, parsed (one GET; `floor`: see the module docstring)."""
    body, info = _Tree(source, repository, floor).get(reference)
    return parse_manifest(body, info.media_type, info.digest)


def copy_content(source: RegistryClient, source_repository: str, destination: RegistryClient,
                 destination_repository: str, top: Manifest, children: Sequence[Descriptor], *,
                 put_digest: str | None = None, mount_from: Sequence[str] = (), workers: int = 4,
                 progress: Progress | None = None, floor: int | None = None, tally: Tally | None = None) -> int:
    """What `top` needs before it can be put: its blobs and `children` (deepest first), unless the
    destination holds `put_digest` (default: top's own) already. Returns the child manifests put."""
    tally = tally if tally is not None else Tally()
    halt = threading.Event()
    manifests_put = 0

    def present(descriptor: Descriptor) -> bool:
        # A registry accepts a manifest only once everything it references is there, so a manifest
        # the destination holds brings its whole subtree: no need to GET it from the source.
        return destination.head_manifest(destination_repository, descriptor.digest) is not None

    with ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="copy") as pool:
        if destination.head_manifest(destination_repository, put_digest or top.digest) is None:
            levels = _levels(pool, _Tree(source, source_repository, floor), children, present)
            images = [top, *(m for level in levels for m in level)]

            def move(blob: Descriptor) -> None:
                copy_blob(source, source_repository, destination, destination_repository, blob,
                          mount_from=mount_from, tally=tally, progress=progress, stop=halt)

            _run_all(pool, move, _unique_blobs(images), halt)
            for level in levels:
                _run_all(pool, lambda m: destination.put_manifest(destination_repository, m.digest, m.body,
                                                                  m.media_type), level)
                manifests_put += len(level)
    return manifests_put


def copy_image(source: RegistryClient, source_repository: str, destination: RegistryClient,
               destination_repository: str, reference: str, *, tags: Sequence[str] | None = None,
               platforms: Sequence[str] = (), mount_from: Sequence[str] = (), workers: int = 4,
               progress: Progress | None = None, floor: int | None = None,
               before_tags: Callable[[Sequence[str]], object] | None = None) -> CopyResult:
    """Copy `source_repository:reference` (tag or digest) into the destination, under `tags`
    (default: the same reference; for a digest, the digest alone).

    Costs one source manifest GET for the top level plus one per child manifest the destination
    does not already hold, however many tags. `floor`: see the module docstring. Raises
    RegistryError (and its subclasses DigestMismatch, TooManyRequests, QuotaReserved,
    ManifestError, NoMatchingPlatform, Cancelled); the destination tags are then unchanged.

    `before_tags`: called with the digests of the manifests now at the destination that are the
    source's own (the top unless a filter rewrote it, and each platform manifest), after the top
    is put by digest and before any tag moves: the artifacts that refer to them go there.
    """
    if floor is not None and source.budget.remaining is None:
        source.head_manifest(source_repository, reference)  # free: learn the quota before the first GET
    top = fetch(source, source_repository, reference, floor)
    put_body, put_type = top.body, top.media_type
    children: tuple[Descriptor, ...] = ()
    if top.is_index:
        children = select(top, platforms)
        if len(children) != len(top.children):
            put_body = rewrite_index(top, children, platforms)
    put_digest = compute_digest(put_body)
    if tags is None:
        tags = [put_digest if DIGEST_RE.fullmatch(reference) else reference]
    tally = Tally()
    manifests_put = copy_content(source, source_repository, destination, destination_repository, top, children,
                                 put_digest=put_digest, mount_from=mount_from, workers=workers, progress=progress,
                                 floor=floor, tally=tally)
    if before_tags is not None:
        if destination.head_manifest(destination_repository, put_digest) is None:
            destination.put_manifest(destination_repository, put_digest, put_body, put_type)
            manifests_put += 1
        own = [put_digest] if put_digest == top.digest else []
        before_tags([*own, *(c.digest for c in children if not c.is_attestation)])
    for tag in tags:
        destination.put_manifest(destination_repository, tag, put_body, put_type)
    return CopyResult(
        source_digest=top.digest, destination_digest=put_digest, bytes_copied=tally.bytes_copied,
        blobs_copied=tally.blobs_copied, blobs_skipped=tally.blobs_skipped, blobs_mounted=tally.blobs_mounted,
        manifests_put=manifests_put + len(tags))


def recorded_source_digest(destination: RegistryClient, repository: str, tag: str, *,
                           platforms: Sequence[str] | None = None) -> str | None:
    """The source digest the destination tag was copied from, read with one destination GET.

    For a filtered (rewritten) index: the recorded source digest, or None when `platforms` is given
    and differs from the filter recorded. Otherwise the tag's own digest (equal to the source's),
    or None when `platforms` would drop some of its entries. None when the tag does not exist.
    """
    try:
        body, info = destination.get_manifest(repository, tag)
    except RegistryError as err:
        if err.status == 404:
            return None
        raise
    manifest = parse_manifest(body, info.media_type, info.digest)
    recorded = manifest.annotations.get(SOURCE_DIGEST_ANNOTATION)
    if recorded:
        if platforms is not None and manifest.annotations.get(PLATFORMS_ANNOTATION) != platform_label(platforms):
            return None
        return recorded
    if platforms and manifest.is_index:
        try:
            if len(select(manifest, platforms)) != len(manifest.children):
                return None
        except NoMatchingPlatform:
            return None
    return info.digest
