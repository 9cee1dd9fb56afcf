"""dockerd's own record of a build's pulls (`GET /events`), and which of them did not come through the mirror.

The endpoint sees only what is asked of it. dockerd asks its `registry-mirrors` for Docker Hub alone (moby
registry/service_v2.go lookupV2Endpoints: `if hostname == DefaultNamespace || hostname == IndexHostname {`,
mirrors first, then `DefaultV2Registry`; any other host gets its own endpoints only), so `ghcr.io/...` and
`registry-1.docker.io/...` go straight to their registry, and when the endpoint does not answer dockerd falls back
to Docker Hub without a word. dockerd logs an image event `pull` for each pull that succeeds, whose `Actor.ID` is
the reference pulled as the CLI shows it (moby distribution/pull.go: `ImageEventLogger(reference.FamiliarString(ref),
..., "pull")`): `busybox:latest`, `quay.io/org/app:1`, `busybox@sha256:...`.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .daemon import daemon_get
from .mirror_map import DOCKER_HUB, MirrorMap

# dockerd keeps its last 256 events of every type in memory, and only those answer a `since` query
# (moby daemon/events/events.go eventsLimit = 256, in 20.10 as today): a full buffer may have dropped pulls.
EVENTS_KEPT = 256


class DaemonUnavailable(Exception):
    """dockerd did not answer as its API documents: one line, why."""


@dataclass(frozen=True)
class Pull:
    shown: str  # as dockerd names it (Actor.ID)
    domain: str  # docker.io for Docker Hub, as the reference normalizes it
    path: str  # library/busybox
    references: tuple[str, ...]  # its tag and/or digest, as the endpoint's journal records a request

    @classmethod
    def of(cls, shown: str) -> Pull:
        """A reference as distribution/reference normalizes it (normalize.go splitDockerDomain)."""
        name, _, digest = shown.partition("@")
        slash, colon = name.rfind("/"), name.rfind(":")
        name, tag = (name[:colon], name[colon + 1:]) if colon > slash else (name, "")
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            domain, path = first, rest
        else:
            domain, path = DOCKER_HUB, name
        if domain == "index.docker.io":
            domain = DOCKER_HUB
        if domain == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        return cls(shown, domain, path, tuple(r for r in (tag, digest) if r))


@dataclass(frozen=True)
class PullRecord:
    pulls: list[Pull]
    complete: bool  # False when dockerd's event buffer was full: earlier pulls of the build may be missing


def answer(api: str, path: str) -> tuple[int, http.client.HTTPResponse, bytes]:
    """GET on the daemon's API: status, answer and body; DaemonUnavailable when it does not answer."""
    try:
        response, body = daemon_get(api, path)
    except (OSError, http.client.HTTPException) as err:
        raise DaemonUnavailable(f"no answer on {api} ({err})") from None
    return response.status, response, body


def api_path(api: str, path: str) -> str:
    """`path` under the version dockerd speaks: every answer carries it in `API-Version` (Engine API, _ping), and a
    path without a version prefix is deprecated (Engine API, "Versioning")."""
    status, response, _ = answer(api, "/_ping")
    version = response.getheader("API-Version") or ""
    if status != 200 or not version.replace(".", "").isdigit():
        raise DaemonUnavailable(f"{api} answered /_ping with {status}, API version {version or 'unknown'}")
    return f"/v{version}{path}"


def read_pulls(api: str, since: float, until: float) -> PullRecord:
    """dockerd's pull events between two times (Engine API, SystemEvents: `since`/`until` as Unix seconds).

    With `until` in the past dockerd answers with what it kept and ends the response (moby
    api/server/router/system getEvents, onlyPastEvents). Asked without filters: the count of all its events
    tells whether its buffer was full.
    """
    query = urllib.parse.urlencode({"since": f"{since:.9f}", "until": f"{until:.9f}"})
    status, _, body = answer(api, api_path(api, f"/events?{query}"))
    if status != 200:
        raise DaemonUnavailable(f"{api} answered /events with {status}")
    try:
        events = [json.loads(line) for line in body.decode(errors="replace").splitlines() if line.strip()]
        pulls = [Pull.of(str(event["Actor"]["ID"])) for event in events
                 if event.get("Type") == "image" and event.get("Action") == "pull"]
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        raise DaemonUnavailable(f"{api} answered /events with what is not its event stream ({err})") from None
    return PullRecord(pulls, complete=len(events) < EVENTS_KEPT)


def daemon_mirrors(api: str) -> list[str]:
    """The mirrors dockerd uses now (`GET /info`, RegistryConfig.Mirrors)."""
    status, _, body = answer(api, api_path(api, "/info"))
    try:
        mirrors = json.loads(body)["RegistryConfig"]["Mirrors"] if status == 200 else None
    except (ValueError, KeyError, TypeError, RecursionError):
        mirrors = None
    if not isinstance(mirrors, list):
        raise DaemonUnavailable(f"{api} answered /info with {status}, and no mirror list")
    return [m.rstrip("/") for m in mirrors if isinstance(m, str)]


def unmirrored(pulls: Iterable[Pull], journal: list[dict[str, object]], *, mirror: MirrorMap | None,
               registries: Sequence[str], endpoint: str, never_asked: str) -> tuple[int, dict[str, str]]:
    """(how many pulls came through the mirror, each one that did not -> why).

    A Docker Hub pull came through the mirror when the endpoint served one of its manifests: its repository and
    tag or digest in the journal. `registries` (the mirror's own) and the endpoint's address count as the mirror.
    `never_asked`: why the endpoint never saw a Docker Hub pull, as far as the report knows (the endpoint is down).
    """
    seen: dict[tuple[str, str], bool] = {}
    for entry in journal:
        if entry.get("upstream") == DOCKER_HUB and entry.get("kind", "manifests") == "manifests":
            key = (str(entry.get("image")), str(entry.get("reference")))
            seen[key] = seen.get(key, False) or bool(entry.get("served"))
    mirrors = {*registries, endpoint}
    through, missed = 0, {}
    for pull in {pull.shown: pull for pull in pulls}.values():  # an image pulled twice is one image
        if pull.domain in mirrors:
            through += 1
            continue
        if pull.domain == DOCKER_HUB:
            asked = [seen[(pull.path, ref)] for ref in pull.references if (pull.path, ref) in seen]
            if any(asked):
                through += 1
            elif asked:
                missed[pull.shown] = "asked of the mirror, which could not serve it"
            else:
                cause = f": {never_asked}" if never_asked else ""
                missed[pull.shown] = f"Docker Hub, but dockerd never asked the mirror{cause}"
            continue
        if pull.domain == "registry-1.docker.io":
            missed[pull.shown] = "written registry-1.docker.io/..., which dockerd does not mirror: write docker.io/..."
            continue
        held = held_as(pull, mirror, registries[0] if registries else "")
        missed[pull.shown] = (f"{pull.domain} is not Docker Hub, and dockerd mirrors Docker Hub only"
                              + (f"; pull {held} to use the mirror" if held else ""))
    return through, missed


def held_as(pull: Pull, mirror: MirrorMap | None, registry: str) -> str:
    """The mirror's repository for an image dockerd pulled from elsewhere (the first the endpoint would try), for the
    build to pull instead; empty if the mirror holds nothing of its upstream."""
    if mirror is None or not registry or pull.domain not in mirror.upstreams():
        return ""
    routed, _, candidates = mirror.route(f"{pull.domain}/{pull.path}")
    return f"{registry}/{candidates[0]}" if candidates and routed == pull.domain else ""
