"""Moving one blob into a destination repository: skip, mount, or stream with verification."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass

from .errors import Cancelled, DigestMismatch, RegistryError, TooManyRequests
from .manifests import Descriptor
from .registry import RegistryClient

# A dropped connection or a 5xx mid-stream restarts the blob from its first byte, this many times in all.
BLOB_ATTEMPTS = 3
_PROGRESS_STEP = 8 << 20
_PREFETCH_DEPTH = 4  # chunks of blob_reader.CHUNK_SIZE read ahead per blob: bounded memory
_PREFETCH_MIN = 4 << 20  # below this, a helper thread costs more than it saves

# progress(blob digest, bytes moved so far, blob size); called from worker threads.
Progress = Callable[[str, int, int], None]


@dataclass
class Tally:
    """Counts shared by the worker threads of one copy."""

    bytes_copied: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def _retryable(err: RegistryError) -> bool:
    if isinstance(err, DigestMismatch | TooManyRequests):
        return False
    return err.status is None or err.status >= 500


def _prefetched(chunks: Iterator[bytes], depth: int = _PREFETCH_DEPTH) -> Generator[bytes, None, None]:
    """Read ahead on a helper thread, so the source download overlaps the destination upload.

    At most `depth` chunks wait in memory; an error on the reading side (lost connection, digest
    mismatch) is raised here, in the uploader, before the chunk that would complete the blob.
    """
    pipe: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: bytes | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                pipe.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(None)
        except BaseException as err:  # noqa: BLE001 - handed to the consuming thread, which raises it
            put(err)

    reader = threading.Thread(target=read, name="blob-read", daemon=True)
    reader.start()
    try:
        while True:
            item = pipe.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def _watched(chunks: Iterator[bytes], blob: Descriptor, progress: Progress | None,
             stop: threading.Event | None) -> Generator[bytes, None, None]:
    """Report progress, and abandon the upload mid-body once `stop` is set: the registry then
    never sees the whole blob, so nothing is committed."""
    done, reported = 0, 0
    for chunk in chunks:
        if stop is not None and stop.is_set():
            raise Cancelled(f"blob {blob.digest}: stopped after {done} of {blob.size} bytes")
        done += len(chunk)
        if progress and (done - reported >= _PROGRESS_STEP or done == blob.size):
            progress(blob.digest, done, blob.size)
            reported = done
        yield chunk


def copy_blob(source: RegistryClient, source_repository: str, destination: RegistryClient,
              destination_repository: str, blob: Descriptor, *, mount_from: Sequence[str] = (),
              tally: Tally, progress: Progress | None = None, stop: threading.Event | None = None) -> None:
    if destination.has_blob(destination_repository, blob.digest):
        tally.add(blobs_skipped=1)
        return
    location = None
    candidates = [r for r in mount_from if r != destination_repository]
    # One candidate: mount straight away, and upload into the session a refused mount opens.
    # Several: find one that holds the blob first (destination HEADs are cheap).
    mount = candidates[0] if len(candidates) == 1 else next(
        (r for r in candidates if destination.has_blob(r, blob.digest)), None)
    if mount is not None:
        location = destination.start_upload(destination_repository, mount=blob.digest, from_repository=mount)
        if location is None:
            tally.add(blobs_mounted=1)
            return
    for attempt in range(1, BLOB_ATTEMPTS + 1):
        reader = source.open_blob(source_repository, blob.digest, blob.size)
        read = reader.chunks()
        ahead = _prefetched(read) if blob.size >= _PREFETCH_MIN else None
        watched = _watched(ahead or read, blob, progress, stop)
        try:
            destination.upload_blob(destination_repository, blob.digest, blob.size, watched, location=location)
        except RegistryError as err:
            if attempt == BLOB_ATTEMPTS or not _retryable(err):
                raise
            continue
        finally:
            # Outermost first: closing the read-ahead stops and joins its thread before the
            # response it reads from is closed.
            for stage in (watched, ahead, read):
                if stage is not None:
                    stage.close()
            reader.close()
            location = None  # a session that saw a failed request is not reused
        tally.add(bytes_copied=blob.size, blobs_copied=1)
        return
