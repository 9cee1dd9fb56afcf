"""What copying referrers costs on the copy benchmark's images: time and requests, with and without them.

Each image is synced (plan and copy, the CLI's engine in this process, fresh clients) from a loopback source
to an empty destination three ways: `referrers: false`; `referrers: true` on an image nothing refers to; and
`referrers: true` on the image with two referrers, an SPDX SBOM (an OCI 1.1 referrer, found through the
referrers tag: distribution 2.8 has no referrers API) and a cosign `.sig` signature. Then the tag, unchanged,
is planned again, as every scheduled run does. Each from two sources: the registry itself (no rate limit:
the planner lists referrers every run), and the same behind the rate-limited "Docker Hub" of
tests/support/limiter.py with room to spare (rate-limit headers: the planner lists none, HEADs only).

Requests are read from the source registry's access log; "counted" are those Docker Hub would count as pulls:
manifest GETs and (an assumption, as the engine makes it) referrers API GETs. Time is the median of `rounds`.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ecr_mirror_cdk.config_parse import parse_config
from lambdas.mirror.aws.connect import connect
from lambdas.mirror.aws.observability import logger
from lambdas.mirror.planning.plan import plan
from lambdas.mirror.planning.plan_referrers import refresh_due, schedule_period
from lambdas.mirror.planning.sync import run_tasks
from tests.bench.copy_speed import SCENARIOS
from tests.support.cosign_layout import sign_classic
from tests.support.images import push_artifact, push_image
from tests.support.limiter import SIX_HOURS, Limiter
from tests.support.registry import RegistryServer, Request
from tests.support.sigstore import keypair

WORKERS = 8
CASES = (("off", "bench/plain", False), ("on, none", "bench/plain", True),
         ("on, 2 referrers", "bench/signed", True))


def _counted(requests: list[Request]) -> int:
    return sum(r.method == "GET" and ("/manifests/" in r.path or "/referrers/" in r.path) for r in requests)


def _sync(log: RegistryServer, host: str, destination: RegistryServer, repository: str, referrers: bool,
          target: str) -> tuple[float, list[Request], list[Request]]:
    """(seconds, source requests of the sync, source requests of planning it again) through `host`."""
    config = parse_config({"images": [{"source": f"{host}/{repository}", "tags": ["v1"], "target": target,
                                       "referrers": referrers}]})
    # A rate-limited source's tag has its referrers listed once in 6 hours of runs: plan at a time that is not its turn
    now = time.time()
    now += 0 if not refresh_due(f"{host}/{repository}:v1", now, schedule_period(config.schedule)) else 600
    before = len(log.requests())
    started = time.perf_counter()
    endpoints = connect(destination.host)
    outcomes = run_tasks(plan(config, endpoints, workers=WORKERS, now=now).tasks(), endpoints, workers=WORKERS)
    seconds = time.perf_counter() - started
    if [o.status for o in outcomes] != ["copied"]:
        raise RuntimeError(f"the sync did not copy: {[(o.status, o.error) for o in outcomes]}")
    copied = log.requests()[before:]
    before = len(log.requests())
    again = plan(config, connect(destination.host), workers=WORKERS, now=now)
    if again.counts() != {"skip": 1}:
        raise RuntimeError(f"the unchanged tag was not skipped: {again.counts()}")
    return seconds, copied, log.requests()[before:]


def _row(root: Path, source: RegistryServer, host: str, tag: str, rounds: int) -> dict[str, dict[str, Any]]:
    row: dict[str, dict[str, Any]] = {}
    for case, repository, on in CASES:
        runs = []
        for n in range(rounds):
            with RegistryServer(root, name=f"dest-{tag}-{len(row)}-{n}") as destination:
                runs.append(_sync(source, host, destination, repository, on, f"bench/{n}"))
        _, copied, replanned = runs[-1]  # the same requests every round
        row[case] = {"seconds": statistics.median(r[0] for r in runs), "requests": len(copied),
                     "counted": _counted(copied), "replan_requests": len(replanned),
                     "replan_counted": _counted(replanned)}
    return row


def _print(source: str, row: dict[str, dict[str, Any]]) -> None:
    sync = " | ".join(f"{case} {f['seconds']:.3f} s {f['requests']} ({f['counted']})" for case, f in row.items())
    replan = " | ".join(f"{f['replan_requests']} ({f['replan_counted']})" for f in row.values())
    print(f"  {source:14s} sync: {sync};  re-plan: {replan}", flush=True)


def run(*, rounds: int = 3) -> dict[str, dict[str, Any]]:
    level = logger.log_level
    logger.setLevel(logging.WARNING)  # a line per copied tag would drown the figures
    try:
        return _run(rounds)
    finally:
        logger.setLevel(level)


def _run(rounds: int) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    print(f"one tag synced into an empty destination, then planned again unchanged; time median of {rounds}; "
          "source requests (counted: manifest and referrers GETs)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-referrers-") as tmp:
        root = Path(tmp)
        key = keypair(root / "keys")
        for number, (name, shape) in enumerate(SCENARIOS.items()):
            with RegistryServer(root, name=f"source{number}") as source:
                push_image(source.host, "bench/plain", "v1", seed=number, **shape)
                signed = push_image(source.host, "bench/signed", "v1", seed=number, **shape)
                push_artifact(source.host, "bench/signed", signed, b'{"spdxVersion":"SPDX-2.3","name":"bench"}')
                sign_classic(source.host, "bench/signed", signed, key.load())
                print(name, flush=True)
                unlimited = _row(root, source, source.host, f"{number}u", rounds)
                _print("no rate limit", unlimited)
                with Limiter(source.host, policy=replace(SIX_HOURS, anonymous=100_000)) as limiter:
                    limited = _row(root, source, limiter.host, f"{number}l", rounds)
                _print("rate-limited", limited)
                figures[name] = {"no rate limit": unlimited, "rate-limited": limited}
    return figures


if __name__ == "__main__":
    run()
