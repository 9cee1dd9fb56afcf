"""Independent checks of what landed in a registry: skopeo, and a walk of the manifest tree."""

from __future__ import annotations

import hashlib
import json
import subprocess

from tests.support.images import Pusher


def skopeo_raw_digest(host: str, repository: str, reference: str) -> str:
    sep = "@" if reference.startswith("sha256:") else ":"
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{host}/{repository}{sep}{reference}"],
                         capture_output=True, check=True, timeout=30)
    return "sha256:" + hashlib.sha256(out.stdout).hexdigest()


def skopeo_inspect(host: str, repository: str, reference: str) -> subprocess.CompletedProcess[str]:
    """`skopeo inspect` reads the config blob of the host platform: fails on incomplete images."""
    return subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{host}/{repository}:{reference}"],
                          capture_output=True, text=True, timeout=30)


def tag_exists(host: str, repository: str, tag: str) -> bool:
    pusher = Pusher(host)
    return pusher.request("HEAD", f"/v2/{repository}/manifests/{tag}", repository).status == 200


def missing_content(host: str, repository: str, reference: str) -> list[str]:
    """Every manifest and blob the tag reaches that the registry cannot serve (empty: complete)."""
    pusher = Pusher(host)
    missing: list[str] = []

    def walk(ref: str) -> None:
        try:
            doc = json.loads(pusher.get_manifest(repository, ref))
        except RuntimeError:
            missing.append(ref)
            return
        for child in doc.get("manifests", []):
            walk(child["digest"])
        for blob in [doc["config"], *doc.get("layers", [])] if "config" in doc else []:
            if not pusher.has_blob(repository, blob["digest"]):
                missing.append(blob["digest"])

    walk(reference)
    return missing
