"""The closing report (`--report`): one line from this build's journal, what the mirror served and what fell back."""

from __future__ import annotations

import json
from pathlib import Path

from .endpoint import state_files


def report(pidfile: Path) -> str:
    """One line: manifests the mirror served, each request that fell back to the upstream, and why."""
    state = state_files(pidfile)
    if state["remote"].exists():
        return ("mirror: the Docker daemon is remote: builders pulled from ECR's cache prefixes themselves, so this "
                "build has no record of what the mirror served")
    try:
        entries = [json.loads(line) for line in state["journal"].read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        return f"mirror: no record of this build's pulls ({state['journal']}: {err})"
    served = [e for e in entries if e.get("served") and e.get("method") == "GET"]
    by_upstream: dict[str, int] = {}
    for entry in served:
        by_upstream[entry["upstream"]] = by_upstream.get(entry["upstream"], 0) + 1
    counts = ", ".join(f"{upstream} {count}" for upstream, count in sorted(by_upstream.items()))
    from_home = sum(1 for entry in served if entry.get("home"))
    if from_home:
        counts += f"; {from_home} from the home registry"
    parts = [f"mirror: {len(served)} manifests served by the mirror" + (f" ({counts})" if counts else "")]
    fell_back, refused = {}, {}
    for entry in entries:
        if entry.get("served"):
            continue
        if "path" in entry:
            refused[f"{entry['method']} {entry['path']}"] = entry["reason"]
        else:
            sep = "@" if ":" in entry["reference"] else ":"
            layer = " (a layer)" if entry.get("kind") == "blobs" else ""
            fell_back[f"{entry['upstream']}/{entry['image']}{sep}{entry['reference']}{layer}"] = entry["reason"]
    if fell_back:
        parts.append(f"{len(fell_back)} fell back to the upstream: {listing(fell_back)}")
    if refused:
        parts.append(f"{len(refused)} refused by the endpoint, so the client went to the upstream: {listing(refused)}")
    if any(entry.get("path_first") for entry in entries):
        parts.append("a builder put a mirror's path before /v2/: its BuildKit is older than v0.12 and cannot use "
                     "path mirrors (moby/buildkit PR 3427), so it pulled those images from the upstream")
    return "; ".join(parts) if len(parts) > 1 else parts[0] + "; no request fell back to the upstream"


def listing(reasons: dict[str, str]) -> str:
    shown = "; ".join(f"{what} ({reason})" for what, reason in list(reasons.items())[:5])
    return shown + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")
