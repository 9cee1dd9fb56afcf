"""Errors the registry client and the copy engine raise; callers catch these, not urllib3's."""

from __future__ import annotations


class RegistryError(Exception):
    """A registry refused or failed a request; `status` is the HTTP status, None for network errors."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TooManyRequests(RegistryError):
    """HTTP 429 that outlasted the client's wait budget; `retry_after` is the server's hint in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, 429)
        self.retry_after = retry_after


class DigestMismatch(RegistryError):
    """Bytes did not hash to the digest (or size) that named them; nothing was committed."""


class ManifestError(RegistryError):
    """A manifest the engine cannot parse or does not support."""


class NoMatchingPlatform(ManifestError):
    """A platform filter kept no manifest of an index."""


class QuotaReserved(TooManyRequests):
    """A manifest GET would take an upstream's pull quota below the reserve; it was not sent."""


class Cancelled(RegistryError):
    """The copy was told to stop (Ctrl-C); what was in flight was abandoned uncommitted."""


class CredentialsError(RegistryError):
    """A registry's credentials could not be read (secret missing, AWS unreachable): its images fail."""
