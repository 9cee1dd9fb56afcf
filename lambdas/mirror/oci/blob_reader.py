"""A blob streaming from a registry, verified against its digest and size as it is read."""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from types import TracebackType

import urllib3

from .errors import DigestMismatch, RegistryError

CHUNK_SIZE = 1 << 20


class BlobReader:
    """A blob's bytes streaming from the registry, hashed as they pass.

    With `size` and `digest` known, the last chunk is only handed out after the hash matched, so a
    consumer streaming the chunks elsewhere never delivers a complete, wrong blob.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse, digest: str, size: int | None) -> None:
        self._response = response
        self.digest = digest
        length = response.headers.get("Content-Length")
        self.size = size if size is not None else (int(length) if length is not None else None)
        if size is not None and length is not None and int(length) != size:
            self.close()
            raise DigestMismatch(f"blob {digest}: registry sent {length} bytes, descriptor says {size}")
        self.bytes_read = 0
        self._hash = hashlib.new(digest.split(":", 1)[0])

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Generator[bytes, None, None]:
        try:
            while True:
                try:
                    chunk = self._response.read(chunk_size, decode_content=False)
                except urllib3.exceptions.HTTPError as err:
                    raise RegistryError(f"blob {self.digest}: connection lost after {self.bytes_read} bytes: "
                                        f"{err}") from err
                if not chunk:
                    self._verify()
                    return
                self._hash.update(chunk)
                self.bytes_read += len(chunk)
                if self.size is not None and self.bytes_read >= self.size:
                    self._verify()
                yield chunk
        finally:
            self.close()

    def _verify(self) -> None:
        actual = f"{self.digest.split(':', 1)[0]}:{self._hash.hexdigest()}"
        if self.size is not None and self.bytes_read != self.size:
            raise DigestMismatch(f"blob {self.digest}: got {self.bytes_read} bytes, expected {self.size}")
        if actual != self.digest:
            raise DigestMismatch(f"blob {self.digest}: content hashes to {actual}")

    def read_all(self) -> int:
        """Read, verify and discard every byte (a pull, as a build makes one); returns the count."""
        for _ in self.chunks():
            pass
        return self.bytes_read

    def close(self) -> None:
        if not self._response.closed and self.size is not None and self.bytes_read < self.size:
            # Abandoned mid-body: the connection cannot serve another request, so close it
            # rather than hand it back to the pool with unread bytes.
            self._response.close()
        self._response.release_conn()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
