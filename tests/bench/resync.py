"""Benchmark: re-sync of 100 unchanged tags against loopback registries.

Prints the source manifest GETs the re-sync made (target 0: HEADs only) and the wall time per tag
(target < 50 ms), median of `repeats` re-syncs, each with fresh clients (a cold planner Lambda).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ecr_mirror_cdk.config_parse import parse_config
from lambdas.mirror.aws.connect import connect
from lambdas.mirror.aws.observability import logger
from lambdas.mirror.planning.plan import plan
from lambdas.mirror.planning.sync import run_tasks
from tests.support.images import push_image
from tests.support.registry import RegistryServer


def run(*, tags: int = 100, repeats: int = 3) -> dict[str, Any]:
    level = logger.log_level
    logger.setLevel(logging.WARNING)  # one INFO line per copied tag would drown the figures
    try:
        return _run(tags, repeats)
    finally:
        logger.setLevel(level)


def _run(tags: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="resync-bench-") as tmp, \
            RegistryServer(Path(tmp), name="source") as source, \
            RegistryServer(Path(tmp), name="destination") as destination:
        for n in range(tags):
            # Half multi-platform indexes with attestations, half single manifests, as a real mirror has.
            push_image(source.host, "bench/app", f"v{n:03d}", kind="oci-index" if n % 2 else "docker-v2",
                       attestations=bool(n % 2), layers=1, layer_size=256, seed=n)
        config = parse_config({"images": [{"source": f"{source.host}/bench/app", "tag_regex": r"v\d+"}]})
        endpoints = connect(destination.host)
        first = run_tasks(plan(config, endpoints).tasks(), endpoints)
        if len(first) != tags or any(o.status != "copied" for o in first):
            raise RuntimeError(f"initial sync failed: {[o.error for o in first if o.status != 'copied'][:3]}")
        seconds, gets = [], []
        for _ in range(repeats):
            before = len(source.manifest_gets())
            started = time.perf_counter()
            endpoints = connect(destination.host)
            result = plan(config, endpoints)
            outcomes = run_tasks(result.tasks(), endpoints)
            seconds.append(time.perf_counter() - started)
            gets.append(len(source.manifest_gets()) - before)
            if outcomes or result.counts() != {"skip": tags}:
                raise RuntimeError(f"re-sync was not a no-op: {result.counts()}")
    per_tag_ms = statistics.median(seconds) * 1000 / tags
    print(f"re-sync of {tags} unchanged tags: {max(gets)} source manifest GETs (target 0), "
          f"{per_tag_ms:.1f} ms per tag (target < 50 ms; median of {repeats}, "
          f"{statistics.median(seconds) * 1000:.0f} ms in all)")
    return {"tags": tags, "source_manifest_gets": max(gets), "ms_per_tag": per_tag_ms, "runs_s": seconds}


if __name__ == "__main__":
    run()
