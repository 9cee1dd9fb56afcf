"""Whether a source digest carries a signature from the configured key: fetched at the source registry, checked
by `cosign`. The planner asks this only for a tag whose digest moved, before it queues the copy.

Cost at the source: the tags `sha256-<hex>.sig` and `sha256-<hex>` are looked up with HEADs, which Docker Hub
does not count ("Using HEAD won't", docs.docker.com/docker-hub/usage/pulls). Each signature manifest read is a
manifest GET, which it counts as a pull; so is, here, the referrers API request (Docker's page does not name
it; counted to be safe). Blobs (payloads, bundles) are not pulls. Every GET keeps the upstream's
`sync.quota_reserve` (`floor`). A digest found unsigned is remembered with the digests those HEADs saw, so the
next runs hold the tag again without a GET until a signature tag changes or `RECHECK_AFTER` has passed (a
bundle behind the referrers API has no tag to watch).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ecr_mirror_cdk.reference import DIGEST_RE
from ecr_mirror_cdk.signing_key import KeySource, load_public_key

from ..oci.cosign import (
    BUNDLE,
    MAX_PAYLOAD,
    Rejected,
    bundle_layer,
    check_bundle,
    check_simple_signing,
    signature_layers,
)
from ..oci.referrers import cosign_tag, fallback_tag, list_referrers

if TYPE_CHECKING:
    from ecr_mirror_cdk.signing_key import PublicKey

KEY_MAX_AGE = 300  # seconds a warm planner reuses a key it read from SSM or Secrets Manager
RECHECK_AFTER = 6 * 3600  # a remembered unsigned digest is checked again after this (Docker Hub's 6-hour window)
MAX_BUNDLES = 4  # sigstore bundles read per digest: each costs a manifest GET
SIGNATURE_COST = 2  # manifest GETs the plan reserves for one check (a .sig manifest, or a referrer's)
MEMO_PREFIX = "unsigned:"  # planner-state keys of remembered unsigned digests


class KeyUnavailable(Exception):
    """The configured key cannot be read or is not an accepted key; one line naming where it was read."""


@dataclass(frozen=True)
class Verdict:
    verified: bool
    reason: str


class Keys:
    """Public keys by source, read once per `max_age` (Powertools Parameters caches the stored ones)."""

    def __init__(self, read: Callable[[KeySource], str] | None = None) -> None:
        self._read = read or read_stored
        self._keys: dict[KeySource, tuple[str, PublicKey]] = {}

    def get(self, source: KeySource) -> tuple[str, PublicKey]:
        """(sha256 of the PEM, the key); KeyUnavailable names the parameter or secret, never its value."""
        if source not in self._keys:
            where = "the inline key" if source.kind == "pem" else f"{source.kind}:{source.value}"
            try:
                pem = self._read(source)
            except Exception as err:  # noqa: BLE001 - Powertools and botocore raise many kinds; the message says which
                raise KeyUnavailable(f"cannot read {where}: {type(err).__name__}: {err}") from None
            try:
                key = load_public_key(pem)
            except ValueError as err:
                raise KeyUnavailable(f"{where}: {err}") from None
            self._keys[source] = (hashlib.sha256(pem.strip().encode()).hexdigest(), key)
        return self._keys[source]


def read_stored(source: KeySource) -> str:
    """The PEM a key source names: inline, an SSM parameter (String; a SecureString is decrypted) or a secret."""
    if source.kind == "pem":
        return source.value
    from aws_lambda_powertools.utilities import parameters

    if source.kind == "ssm":
        return str(parameters.get_parameter(source.value, decrypt=True, max_age=KEY_MAX_AGE))
    return str(parameters.get_secret(source.value, max_age=KEY_MAX_AGE))


def memo_key(repository: str, digest: str, key_id: str, seen: tuple[str | None, ...]) -> str:
    text = "|".join([repository, digest, key_id, *(s or "-" for s in seen)])
    return MEMO_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:16]


class Checker:
    """Checks digests at their source; one instance per plan (it caches verdicts by digest and key)."""

    def __init__(self, keys: Keys, *, floor: int | None, remembered: Mapping[str, float], now: float) -> None:
        self.keys, self.floor, self.remembered, self.now = keys, floor, remembered, now
        self._verdicts: dict[tuple[str, str, KeySource], Verdict] = {}
        self.unsigned: dict[str, float] = {}  # memo keys of this run's unsigned digests -> when checked

    def check(self, client: Any, repository: str, digest: str, source: KeySource) -> Verdict:
        """Raises KeyUnavailable, TooManyRequests (QuotaReserved: the reserve is reached) and RegistryError
        (and OSError) when the source cannot be read: then nothing is known, and the tag stays."""
        cache = (repository, digest, source)
        if cache not in self._verdicts:
            self._verdicts[cache] = self._check(client, repository, digest, source)
        return self._verdicts[cache]

    def _check(self, client: Any, repository: str, digest: str, source: KeySource) -> Verdict:
        key_id, key = self.keys.get(source)
        sig = client.head_manifest(repository, cosign_tag(digest))
        index = client.head_manifest(repository, fallback_tag(digest))
        memo = memo_key(f"{client.host}/{repository}", digest, key_id,
                        (sig.digest if sig else None, index.digest if index else None))
        checked = self.remembered.get(memo)
        if checked is not None and 0 <= self.now - checked < RECHECK_AFTER:
            self.unsigned[memo] = checked
            return Verdict(False, "no signature from the key (checked earlier; signature tags unchanged)")
        reasons: list[str] = []
        if sig is not None:
            try:
                self._classic(client, repository, digest, sig.digest, key)
                return Verdict(True, f"signed ({cosign_tag(digest)})")
            except Rejected as err:
                reasons.append(f"{cosign_tag(digest)}: {err}")
        for referrer in self._bundle_referrers(client, repository, digest)[:MAX_BUNDLES]:
            try:
                self._bundle(client, repository, digest, referrer, key)
                return Verdict(True, f"signed (sigstore bundle {referrer[:19]})")
            except Rejected as err:
                reasons.append(f"bundle {referrer[:19]}: {err}")
        self.unsigned[memo] = self.now
        return Verdict(False, "; ".join(reasons) or f"no signature: no {cosign_tag(digest)} tag and no sigstore "
                                                    "bundle referrer")

    def _manifest(self, client: Any, repository: str, reference: str) -> dict[str, Any]:
        if ":" in reference and not DIGEST_RE.fullmatch(reference):
            raise Rejected(f"a referrer's digest {reference[:80]!r} is malformed")
        body, _ = client.get_manifest(repository, reference, floor=self.floor)
        try:
            doc = json.loads(body)
        except ValueError:
            raise Rejected(f"manifest {reference} is not JSON") from None
        if not isinstance(doc, dict):
            raise Rejected(f"manifest {reference} is not a JSON object")
        return doc

    @staticmethod
    def _blob(client: Any, repository: str, digest: str, size: int) -> bytes:
        if not DIGEST_RE.fullmatch(digest):  # it comes from an untrusted manifest and goes into a URL path
            raise Rejected(f"a layer descriptor's digest {digest[:80]!r} is malformed")
        if not 0 < size <= MAX_PAYLOAD:
            raise Rejected(f"blob {digest} of {size} bytes (at most {MAX_PAYLOAD} are read)")
        with client.open_blob(repository, digest, size) as reader:
            return b"".join(reader.chunks())

    def _classic(self, client: Any, repository: str, digest: str, manifest: str, key: PublicKey) -> None:
        layers = signature_layers(self._manifest(client, repository, manifest))
        if not layers:
            raise Rejected("no simple-signing layer")
        failures = []
        for layer_digest, size, signature in layers:
            try:
                check_simple_signing(self._blob(client, repository, layer_digest, size), signature, digest, key)
                return
            except Rejected as err:
                failures.append(str(err))
        raise Rejected(failures[0] if len(set(failures)) == 1 else "; ".join(failures))

    def _bundle_referrers(self, client: Any, repository: str, digest: str) -> list[str]:
        """The sigstore bundles among the digest's OCI 1.1 referrers (referrers.list_referrers: the referrers API,
        or where a registry has none (404), the spec's fallback, the index under the tag `sha256-<hex>`)."""
        return [d.digest for d in list_referrers(client, repository, digest, floor=self.floor)
                if d.raw.get("artifactType") == BUNDLE]

    def _bundle(self, client: Any, repository: str, digest: str, referrer: str, key: PublicKey) -> None:
        layer, size = bundle_layer(self._manifest(client, repository, referrer), digest)
        check_bundle(self._blob(client, repository, layer, size), digest, key)

