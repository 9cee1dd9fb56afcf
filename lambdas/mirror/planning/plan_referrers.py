"""Planning the copy of an image's referrers (docs/signatures.md): what changed, and what it costs.

Every run, for each tag of an image with `referrers` on, the planner looks at what refers to the tag's own
digest, spending no pulls (a tag whose digest moved gets the HEADs only: its copy lists the rest):
- cosign's tags (`sha256-<hex>.sig`, `.att`, `.sbom`): a HEAD at the source and one at the destination each
  (HEADs are free at Docker Hub: "Version checks do not count towards usage pricing", docker/docs
  `docker-hub/usage/pulls.md`); a tag at another digest, or missing, is copied;
- the OCI 1.1 referrers (the referrers API, else the referrers tag `sha256-<hex>`): listed at the source
  when that costs no pulls, that is when the source's HEAD stated no rate limit (quay.io, ghcr.io, a
  Docker subscription). Where it does (Docker Hub's `ratelimit-remaining`), the planner lists nothing; a
  tag instead gets its turn once every REFRESH seconds, set by a hash of the tag so that the turns spread
  over the window, and the copier lists and copies then: one GET per tag per window, under the budget.

So a signature cosign adds under `.sig` arrives on the next run everywhere, and an OCI 1.1 referrer added
to an unchanged digest arrives on the next run at a source without a rate limit, within REFRESH at one
with. The referrers of an index's platform manifests are copied with the image, when its tag moves.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

from ..oci.errors import RegistryError
from ..oci.manifests import INDEX_TYPES
from ..oci.referrers import cosign_tags, list_referrers

REFRESH = 6 * 3600  # Docker Hub's pull window ("ratelimit-limit: 100;w=21600")
_RATE = re.compile(r"rate\((\d+) (minute|hour|day)s?\)")
_UNIT = {"minute": 60, "hour": 3600, "day": 86400}


def schedule_period(schedule: str) -> float | None:
    """Seconds between scheduled runs for `rate(...)`; None for `cron(...)`, whose runs may be far apart."""
    match = _RATE.fullmatch(schedule)
    return int(match.group(1)) * _UNIT[match.group(2)] if match else None


def refresh_due(key: str, now: float, period: float | None) -> bool:
    """Whether `key` (a tag) has its turn in the run at `now`: one run in every REFRESH seconds of runs
    `period` apart; every run when runs are REFRESH or more apart, or their period is unknown."""
    if period is None or period <= 0 or period >= REFRESH:
        return True
    turns = int(REFRESH // period)
    turn = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % turns
    return int(now // period) % turns == turn


def listings(media_type: str, platforms: tuple[str, ...], known_children: int | None, default_children: int,
             children_per_platform: int) -> int:
    """Referrers listings a copy makes: the top manifest unless a filter rewrites it, and each platform
    manifest (an index's attestation manifests are not listed)."""
    if media_type not in INDEX_TYPES:
        return 1
    if platforms:
        return len(platforms)
    children = known_children if known_children is not None else default_children
    return 1 + math.ceil(children / children_per_platform)


@dataclass(frozen=True)
class ReferrersCheck:
    """What the planner found of a digest's referrers."""

    found: int | None  # artifacts that refer to it at the source; None: the OCI 1.1 ones were not listed
    missing: int  # of those seen, how many the destination lacks
    refresh: bool = False  # a rate-limited source's turn: the copier lists its OCI 1.1 referrers
    note: str = ""

    @property
    def due(self) -> bool:
        return self.missing > 0 or self.refresh

    @property
    def cost(self) -> int:
        """GETs a referrers-only copy makes at the source: the listing and one per missing artifact."""
        return 1 + self.missing if self.due else 0

    def as_dict(self) -> dict[str, Any]:
        return {"referrers": self.found, "referrers_new": self.missing}


def check(source: Any, destination: Any, source_repository: str, destination_repository: str, digest: str, *,
          list_source: bool, refresh: bool) -> ReferrersCheck:
    """Compare the referrers of `digest` at the source and the destination with HEADs (and, with
    `list_source`, the source's listing, which the caller knows costs no pulls)."""
    found = missing = 0
    for tag in cosign_tags(digest):
        there = source.head_manifest(source_repository, tag)
        if there is None:
            continue
        found += 1
        here = destination.head_manifest(destination_repository, tag)
        if here is None or here.digest != there.digest:  # cosign moves the tag as it adds a signature
            missing += 1
    if not list_source:
        return ReferrersCheck(None, missing, refresh)
    try:
        listed = {d.digest for d in list_referrers(source, source_repository, digest)}
        have = {d.digest for d in list_referrers(destination, destination_repository, digest)} if listed else set()
    except RegistryError as err:  # the image is still planned; its referrers wait for a later run
        return ReferrersCheck(None, missing, False, f"referrers not listed: {err}")
    return ReferrersCheck(found + len(listed), missing + len(listed - have))
