"""What copying referrers costs on the copy benchmark's images: time and requests, with and without them.

Each image is synced (plan and copy, the CLI's engine in this process, fresh clients) from a loopback source
to an empty destination three ways: `referrers: false`; `referrers: true` on an image nothing refers to; and
`referrers: true` on the image with two referrers, an SPDX SBOM (an OCI 1.1 referrer, found through the
referrers tag: distribution 2.8 has no referrers API) and a cosign `.sig` signature. Then the tag, unchanged,
is planned again, as every scheduled run does. Requests are read from the source registry's access log;
"counted" are those Docker Hub would count as pulls, manifest GETs and (an assumption, as the engine makes
it) referrers API GETs. Time is the median of `rounds`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ecr_mirror_cdk.config import parse_config
from lambdas.mirror.endpoints import connect
from lambdas.mirror.plan import plan
from lambdas.mirror.sync import run_tasks
from tests.bench.copy_speed import SCENARIOS
from tests.support.images import push_artifact, push_image
from tests.support.registry import RegistryServer, Request
from tests.support.sigstore import cosign_sign, keypair

WORKERS = 8
CASES = (("off", False), ("on, none", True), ("on, 2 referrers", True))


def _counted(requests: list[Request]) -> int:
    return sum(r.method == "GET" and ("/manifests/" in r.path or "/referrers/" in r.path) for r in requests)


def _sync(source: RegistryServer, destination: RegistryServer, repository: str, referrers: bool,
          target: str) -> tuple[float, list[Request], list[Request]]:
    config = parse_config({"images": [{"source": f"{source.host}/{repository}", "tags": ["v1"], "target": target,
                                       "referrers": referrers}]})
    before = len(source.requests())
    started = time.perf_counter()
    endpoints = connect(destination.host)
    outcomes = run_tasks(plan(config, endpoints, workers=WORKERS).tasks(), endpoints, workers=WORKERS)
    seconds = time.perf_counter() - started
    if [o.status for o in outcomes] != ["copied"]:
        raise RuntimeError(f"the sync did not copy: {[(o.status, o.error) for o in outcomes]}")
    copied = source.requests()[before:]
    before = len(source.requests())
    again = plan(config, connect(destination.host), workers=WORKERS)
    if again.counts() != {"skip": 1}:
        raise RuntimeError(f"the unchanged tag was not skipped: {again.counts()}")
    return seconds, copied, source.requests()[before:]


def run(*, rounds: int = 3) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    print(f"sync of one tag into an empty destination, median of {rounds}; source requests (counted: manifest and "
          "referrers GETs); then the unchanged tag planned again", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-referrers-") as root:
        key = keypair(Path(root) / "keys")
        for number, (name, shape) in enumerate(SCENARIOS.items()):
            with RegistryServer(Path(root), name=f"source{number}") as source:
                digest = push_image(source.host, "bench/plain", "v1", seed=number, **shape)
                signed = push_image(source.host, "bench/signed", "v1", seed=number, **shape)
                assert signed == digest
                push_artifact(source.host, "bench/signed", digest, b'{"spdxVersion":"SPDX-2.3","name":"bench"}')
                cosign_sign(source.host, "bench/signed", digest, key)
                row: dict[str, Any] = {}
                for case, on in CASES:
                    repository = "bench/signed" if case.endswith("referrers") else "bench/plain"
                    runs = []
                    for n in range(rounds):
                        with RegistryServer(Path(root), name=f"dest-{number}-{len(row)}-{n}") as destination:
                            runs.append(_sync(source, destination, repository, on, f"bench/{n}"))
                    _, copied, replanned = runs[-1]  # the same requests every round
                    row[case] = {"seconds": statistics.median(r[0] for r in runs), "requests": len(copied),
                                 "counted": _counted(copied),
                                 "replan_requests": len(replanned), "replan_counted": _counted(replanned)}
                figures[name] = row
                cells = "   ".join(f"{case}: {f['seconds']:.3f} s, {f['requests']} requests ({f['counted']} counted)"
                                   for case, f in row.items())
                replan = ", ".join(f"{case} {f['replan_requests']} ({f['replan_counted']} counted)"
                                   for case, f in row.items())
                print(f"{name}\n  sync     {cells}\n  re-plan  {replan}", flush=True)
    return figures


if __name__ == "__main__":
    run()
