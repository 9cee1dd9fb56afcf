"""The closing report (`--report`): one line on this build's pulls. What the mirror served and what fell back (the
endpoint's journal), whether the endpoint still runs, every image dockerd pulled that did not come through the
mirror and why (dockerd's own record, events.py), and what the report cannot see."""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .base import SetupError, alive, write_atomically
from .endpoint import endpoint_pid, state_files
from .events import EVENTS_KEPT, DaemonUnavailable, PullRecord, daemon_mirrors, read_pulls, unmirrored
from .mirror_map import MirrorMap

SHOWN = 5  # items listed per kind; the rest are counted
# Only dockerd's own image pulls log a `pull` event (moby daemon/images LogImageEvent; none from builder-next):
# seen with dockerd 20.10, where `docker build` with BuildKit pulled its FROM image and logged no event.
NOT_SEEN = ("not seen: BuildKit's pulls that did not ask the mirror (docker build with BuildKit, buildx builders), "
            "as dockerd logs no pull event for them")


@dataclass(frozen=True)
class SetupRecord:
    """What a setup that set the mirror up leaves for the report (state_files(...)["setup"])."""

    time: float  # before dockerd was restarted: its record of events starts after
    endpoint: str  # 127.0.0.1:PORT
    daemon_api: str  # where the report asks dockerd: unix:///... or tcp://127.0.0.1:PORT
    daemon_pid: int | None
    registries: list[str]  # the mirror's registry, then its home registry
    map: str  # --map, as given

    def write(self, path: Path) -> None:
        write_atomically(path, json.dumps(asdict(self)) + "\n")

    @classmethod
    def read(cls, path: Path) -> SetupRecord:
        """The record; OSError, ValueError or TypeError if it is missing or not one."""
        data = json.loads(path.read_text())
        record = cls(**data)
        if not (isinstance(record.time, (int, float)) and isinstance(record.endpoint, str)
                and isinstance(record.daemon_api, str) and isinstance(record.registries, list)):
            raise TypeError(f"{path}: not a setup record")
        return record


class Probe:
    """What the report asks of the host: is the endpoint up, what did dockerd pull. Tests pass their own."""

    def endpoint_down(self, pidfile: Path, address: str) -> str | None:
        """Why the endpoint does not serve now, or None: its process, then a GET /v2/ on its address."""
        pid = endpoint_pid(pidfile)
        if pid is None:
            return f"the endpoint {address} is down (its process has ended)"
        try:
            connection = http.client.HTTPConnection(address, timeout=5)
            connection.request("GET", "/v2/")
            status = connection.getresponse().status
        except (OSError, http.client.HTTPException) as err:
            return f"the endpoint {address} (pid {pid}) does not answer ({err})"
        return None if status == 200 else f"the endpoint {address} (pid {pid}) answers /v2/ with {status}"

    def pulls(self, api: str, since: float, until: float) -> PullRecord:
        return read_pulls(api, since, until)

    def mirrors(self, api: str) -> list[str]:
        return daemon_mirrors(api)

    def running(self, pid: int) -> bool:
        return alive(pid)


def report(pidfile: Path, probe: Probe | None = None) -> str:
    """One line: manifests the mirror served, what did not come through it and why, and what it cannot see."""
    probe = probe or Probe()
    state = state_files(pidfile)
    with contextlib.suppress(OSError):  # the line a setup that failed open printed, which says why
        line = (state["not_set_up"].read_text().strip().splitlines() or [""])[0]
        if line:
            return shorten(line, 400)
    if state["remote"].exists():
        return ("mirror: the Docker daemon is remote: builders pulled from ECR's cache prefixes themselves, so this "
                "build has no record of what the mirror served")
    journal = state["journal"]
    try:
        entries = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return f"mirror: no record of this build's pulls: the setup has not run here (no {journal})"
    except OSError as err:
        return f"mirror: no record of this build's pulls: {journal} cannot be read ({err.strerror or err})"
    except ValueError as err:
        return f"mirror: no record of this build's pulls: {journal} is not the endpoint's journal ({err})"
    problems = fell_back(entries)
    parts = [served(entries), *problems]
    missed: dict[str, str] = {}
    try:
        record = SetupRecord.read(state["setup"])
    except (OSError, ValueError, TypeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        parts.append(f"dockerd's own record of pulls not read ({state['setup']}: {why})")
    else:
        down = probe.endpoint_down(pidfile, record.endpoint)
        parts += [down] if down else []
        line, missed = dockerd_pulls(record, entries, down, probe)
        parts.append(line)
    if not missed and not problems:
        parts.append("no request fell back to the upstream")
    return "; ".join([*parts, NOT_SEEN])


def served(entries: list[dict]) -> str:
    """How many manifests the mirror served, by upstream."""
    hits = [e for e in entries if e.get("served") and e.get("method") == "GET"]
    by_upstream: dict[str, int] = {}
    for entry in hits:
        by_upstream[entry["upstream"]] = by_upstream.get(entry["upstream"], 0) + 1
    counts = ", ".join(f"{upstream} {count}" for upstream, count in sorted(by_upstream.items()))
    from_home = sum(1 for entry in hits if entry.get("home"))
    if from_home:
        counts += f"; {from_home} from the home registry"
    return f"mirror: {len(hits)} manifests served by the mirror" + (f" ({counts})" if counts else "")


def dockerd_pulls(record: SetupRecord, entries: list[dict], down: str | None,
                  probe: Probe) -> tuple[str, dict[str, str]]:
    """What dockerd pulled since the setup, and each pull that did not come through the mirror, with why."""
    try:
        pulls = probe.pulls(record.daemon_api, record.time, time.time())
    except DaemonUnavailable as err:
        return f"dockerd's own record of pulls not read: {err}", {}
    never_asked = "the endpoint is down" if down else ""
    with contextlib.suppress(DaemonUnavailable):
        if not down and f"http://{record.endpoint}" not in probe.mirrors(record.daemon_api):
            never_asked = "dockerd no longer lists the mirror"
    try:
        mirror: MirrorMap | None = MirrorMap.parse(record.map)
    except SetupError:  # checked when the setup ran; here it only names where the mirror holds an image
        mirror = None
    through, missed = unmirrored(pulls.pulls, entries, mirror=mirror, registries=record.registries,
                                 endpoint=record.endpoint, never_asked=never_asked)
    total = len({pull.shown for pull in pulls.pulls})
    if not total:
        line = "dockerd pulled no image since the setup"
    elif not missed:
        line = f"dockerd pulled {total} images since the setup, all through the mirror"
    else:
        line = (f"dockerd pulled {total} images since the setup, {through} through the mirror, {len(missed)} not: "
                f"{listing(missed)}")
    if not pulls.complete:
        line += (f" (dockerd keeps its last {EVENTS_KEPT} events only: earlier pulls of this build are not in its "
                 "record)")
    if record.daemon_pid and not probe.running(record.daemon_pid):
        line += f" (dockerd pid {record.daemon_pid} has ended since the setup: its pulls before the restart are lost)"
    return line, missed


def fell_back(entries: list[dict]) -> list[str]:
    """The endpoint's requests answered with an error: fell back to the upstream, or refused."""
    parts = []
    fell, refused = {}, {}
    for entry in entries:
        if entry.get("served"):
            continue
        if "path" in entry:
            refused[f"{entry['method']} {entry['path']}"] = entry["reason"]
        else:
            sep = "@" if ":" in entry["reference"] else ":"
            layer = " (a layer)" if entry.get("kind") == "blobs" else ""
            fell[f"{entry['upstream']}/{entry['image']}{sep}{entry['reference']}{layer}"] = entry["reason"]
    if fell:
        parts.append(f"{len(fell)} fell back to the upstream: {listing(fell)}")
    if refused:
        parts.append(f"{len(refused)} refused by the endpoint, so the client went to the upstream: {listing(refused)}")
    if any(entry.get("path_first") for entry in entries):
        parts.append("a builder put a mirror's path before /v2/: its BuildKit is older than v0.12 and cannot use "
                     "path mirrors (moby/buildkit PR 3427), so it pulled those images from the upstream")
    return parts


def listing(reasons: dict[str, str]) -> str:
    """At most SHOWN items, each `what (why)` cut to a bounded length, and how many more."""
    shown = "; ".join(f"{shorten(what, 160)} ({shorten(why, 240)})" for what, why in list(reasons.items())[:SHOWN])
    return shown + (f"; and {len(reasons) - SHOWN} more" if len(reasons) > SHOWN else "")


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
