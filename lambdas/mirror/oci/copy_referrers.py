"""Copying the artifacts that refer to an image (signatures, SBOMs, attestations), after their subject.

Each artifact is copied digest-exact, as the image is (its blobs and child manifests, then the manifest):
a cosign tag (`sha256-<hex>.sig`, `.att`, `.sbom`) under the same tag, an OCI 1.1 referrer by digest. When
the destination answers a referrer's PUT without `OCI-Subject`, its referrers tag is kept here, as the spec
asks of clients (referrers.add_to_fallback_index).

ECR stores OCI 1.1 referrers ("reference artifacts that are defined by the OCI Referrers API", ECR user guide,
"Private images in Amazon ECR") and lists them in its API with ListImageReferrers (ECR API reference); the
copier reads and writes ECR through the distribution API, as any registry, so none of this is ECR-specific.

Failure is per artifact: a refusal (ECR answered `405 Method Not Allowed` to OCI 1.1 referrer manifests
pushed by `oras copy -r`, aws/containers-roadmap#2783) is logged with the registry's answer and counted, the
other artifacts still go, and the image's tags still move. A 429 or the quota reserve stops the artifacts
not yet copied: they are left for a later run, never the image. Only the artifacts that refer to the
image's manifests are copied, not the artifacts that refer to those artifacts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..settings import SERVICE_NAME
from .copy import copy_content, fetch
from .errors import RegistryError, TooManyRequests
from .referrers import Referrer, add_to_fallback_index, find, index_entry, list_referrers, subject_of

logger = logging.getLogger(SERVICE_NAME)  # formatted by Powertools in the Lambdas (planning/plan.py says why)


@dataclass(frozen=True)
class ReferrersResult:
    found: int = 0  # artifacts that refer to the subjects at the source
    copied: int = 0  # of those, copied now (the rest were there already, failed or deferred)
    failed: tuple[str, ...] = ()  # one line per artifact the destination refused: what and its answer
    deferred: str = ""  # why the artifacts not yet copied were left for a later run (429, quota reserve)

    def as_dict(self) -> dict[str, Any]:
        return {"referrers": self.copied, "referrers_found": self.found, "referrers_failed": list(self.failed),
                "referrers_deferred": self.deferred}


@dataclass
class _Run:
    found: int = 0
    copied: int = 0
    failed: list[str] = field(default_factory=list)
    deferred: str = ""

    def result(self) -> ReferrersResult:
        return ReferrersResult(self.found, self.copied, tuple(self.failed), self.deferred)


def copy_referrers(source: Any, source_repository: str, destination: Any, destination_repository: str,
                   subjects: Sequence[str], *, floor: int | None = None, mount_from: Sequence[str] = (),
                   workers: int = 4) -> ReferrersResult:
    """Copy what refers to each of `subjects` (manifest digests the destination holds) and is missing
    there. Never raises for an artifact; see the module docstring."""
    run = _Run()
    for subject in subjects:
        try:
            wanted = find(source, source_repository, subject, floor=floor)
            missing = _missing(destination, destination_repository, subject, wanted)
        except TooManyRequests as err:
            run.deferred = str(err)
            break
        except RegistryError as err:
            run.failed.append(f"referrers of {subject}: {err}")
            logger.warning(f"cannot list the referrers of {source_repository}@{subject}: {err}")
            continue
        run.found += len(wanted)
        entries: dict[str, list[dict[str, Any]]] = {}  # subject -> what its referrers tag must list
        for referrer in missing:
            try:
                entry = _copy_one(source, source_repository, destination, destination_repository, referrer,
                                  floor=floor, mount_from=mount_from, workers=workers)
            except TooManyRequests as err:
                run.deferred = str(err)
                break
            except RegistryError as err:
                what = referrer.tag or f"{referrer.artifact_type or 'artifact'} {referrer.digest}"
                run.failed.append(f"{what}: {err}")
                logger.warning(f"referrer not copied: {destination_repository} refused {what}",
                               extra={"subject": subject, "error": str(err), "status": err.status})
                continue
            run.copied += 1
            if entry is not None:
                entries.setdefault(entry[0], []).append(entry[1])
        for indexed, listed in entries.items():
            try:
                add_to_fallback_index(destination, destination_repository, indexed, listed)
            except RegistryError as err:
                run.failed.append(f"referrers tag of {indexed}: {err}")
                logger.warning(f"cannot update the referrers tag of {destination_repository}@{indexed}: {err}")
        if run.deferred:
            logger.info(f"referrers left for a later run: {run.deferred}", extra={"subject": subject})
            break
    return run.result()


def _missing(destination: Any, repository: str, subject: str, wanted: Sequence[Referrer]) -> list[Referrer]:
    """The artifacts of `wanted` the destination lacks: a cosign tag at another digest (or none), a
    referrer its own listing does not have. Free: our own registry."""
    listed: set[str] | None = None
    missing = []
    for referrer in wanted:
        if referrer.tag is not None:
            info = destination.head_manifest(repository, referrer.tag)
            if info is None or info.digest != referrer.digest:
                missing.append(referrer)
            continue
        if listed is None:
            listed = {d.digest for d in list_referrers(destination, repository, subject)}
        if referrer.digest not in listed:
            missing.append(referrer)
    return missing


def _copy_one(source: Any, source_repository: str, destination: Any, destination_repository: str,
              referrer: Referrer, *, floor: int | None, mount_from: Sequence[str],
              workers: int) -> tuple[str, dict[str, Any]] | None:
    """Copy one artifact; returns (its subject, its referrers-list entry) when the destination did not
    answer `OCI-Subject`, so that its referrers tag lists it."""
    artifact = fetch(source, source_repository, referrer.digest, floor)
    copy_content(source, source_repository, destination, destination_repository, artifact, artifact.children,
                 mount_from=mount_from, workers=workers, floor=floor)
    stored = destination.store_manifest(destination_repository, referrer.tag or artifact.digest, artifact.body,
                                        artifact.media_type)
    subject = subject_of(artifact.body)
    if subject is None or stored.subject:
        return None
    return subject, index_entry(artifact.body, artifact.digest, artifact.media_type)
