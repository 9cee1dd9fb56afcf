"""Copy wall time, this engine vs `skopeo copy --all --preserve-digests`, same loopback registries.

Each round copies the same source image with each tool (alternating which goes first) into a
destination registry started for that copy, so both upload every blob: skopeo's blob-info cache
(/var/lib/containers/cache for root) would otherwise mount blobs it saw in earlier rounds. The
figure is the median of the rounds. "engine" runs in this process with fresh clients each round
(a warm Lambda); "engine as a process" is the CLI, `python -m lambdas.mirror sync`, with its start-up,
imports, config and planning HEADs; skopeo is a process per copy.

Beside each ratio the harness's own limit: the destination registry taking the same blobs and manifests
from memory (read from the source and hashed before the clock starts, sent with the same 8 workers),
and for the process that plus the interpreter's start-up (`python -c pass`). No copy on these
registries can be faster, so the distance to the limit is a figure.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from lambdas.mirror.oci.copy import copy_image
from lambdas.mirror.oci.registry import RegistryClient
from tests.support.images import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Pusher, digest_of, push_image
from tests.support.registry import RegistryServer

WORKERS = 8  # concurrent blob transfers; skopeo copies up to 6 layers at once by default
SCENARIOS: dict[str, dict[str, Any]] = {
    "multi-arch 2x(6 layers x 4 MiB) + attestations": dict(
        kind="oci-index", platforms=("linux/amd64", "linux/arm64"), layers=6, layer_size=4 << 20,
        attestations=True),
    "single manifest, 3 layers x 48 MiB": dict(kind="docker-v2", layers=3, layer_size=48 << 20),
    "multi-arch 4x(10 layers x 64 KiB)": dict(
        kind="oci-index", platforms=("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/ppc64le"), layers=10,
        layer_size=64 << 10),
}


def _engine(source: RegistryServer, destination: RegistryServer, repository: str) -> float:
    started = time.perf_counter()
    copy_image(RegistryClient(source.host), "bench/app", RegistryClient(destination.host), repository, "v1",
               workers=WORKERS)
    return time.perf_counter() - started


def _engine_process(source: RegistryServer, destination: RegistryServer, repository: str) -> float:
    """The CLI in its own interpreter, as a user runs it: start-up, imports, config and plan included."""
    config = destination.root / f"{destination.name}-mirror.yaml"
    config.write_text(f"images:\n  - source: {source.host}/bench/app\n    tags: [v1]\n    target: {repository}\n")
    started = time.perf_counter()
    # The CLI copies with half its --workers (the other half serve planning): the same 8 as the engine.
    done = subprocess.run([sys.executable, "-m", "lambdas.mirror", "sync", "--config", str(config), "--registry",
                           destination.host, "--workers", str(2 * WORKERS)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the CLI failed ({done.returncode}): {done.stdout[-1000:]} {done.stderr[-1000:]}")
    return time.perf_counter() - started


def _skopeo(source: RegistryServer, destination: RegistryServer, repository: str) -> float:
    started = time.perf_counter()
    subprocess.run(["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--src-tls-verify=false",
                    "--dest-tls-verify=false", f"docker://{source.host}/bench/app:v1",
                    f"docker://{destination.host}/{repository}:v1"], check=True, capture_output=True)
    return time.perf_counter() - started


# Every blob by digest, and the manifests as (reference, body, media type) level by level: children first.
Contents = tuple[dict[str, bytes], list[list[tuple[str, bytes, str]]]]


def _in_memory(source: RegistryServer) -> Contents:
    """bench/app:v1 as the destination receives it, read before any clock starts."""
    pusher = Pusher(source.host)
    accept = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
    blobs: dict[str, bytes] = {}

    def manifest(reference: str) -> tuple[str, bytes, str]:
        response = pusher.request("GET", f"/v2/bench/app/manifests/{reference}", "bench/app",
                                  headers={"Accept": accept})
        body = bytes(response.data)
        document = json.loads(body)
        for blob in [document["config"], *document["layers"]] if "config" in document else []:
            data = bytes(pusher.request("GET", f"/v2/bench/app/blobs/{blob['digest']}", "bench/app").data)
            assert digest_of(data) == blob["digest"]
            blobs[blob["digest"]] = data
        return reference, body, str(response.headers["Content-Type"])

    top = manifest("v1")
    children = [manifest(child["digest"]) for child in json.loads(top[1]).get("manifests", [])]
    return blobs, [level for level in (children, [top]) if level]


def _limit(contents: Contents, source: RegistryServer, destination: RegistryServer, repository: str) -> float:
    """The destination alone: POST and PUT of every blob from memory, then the manifests."""
    blobs, levels = contents
    pusher = Pusher(destination.host)

    def upload(item: tuple[str, bytes]) -> None:
        digest, data = item
        started = pusher.request("POST", f"/v2/{repository}/blobs/uploads/", repository)
        location = started.headers["Location"]
        done = pusher.request("PUT", f"{location}{'&' if '?' in location else '?'}digest={digest}", repository,
                              body=data, headers={"Content-Type": "application/octet-stream"})
        if (started.status, done.status) != (202, 201):
            raise RuntimeError(f"upload {digest}: HTTP {started.status}, {done.status}")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(upload, blobs.items()))
        for level in levels:
            list(pool.map(lambda m: pusher.manifest(repository, *m), level))
    return time.perf_counter() - started


def _startup() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def run(*, rounds: int = 5) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    print("limit: the destination registry taking the same blobs and manifests from memory; "
          "as a process, plus the interpreter's start-up (python -c pass)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-copy-") as root:
        for number, (name, shape) in enumerate(SCENARIOS.items()):
            with RegistryServer(Path(root), name=f"source{number}") as source:
                push_image(source.host, "bench/app", "v1", seed=number, **shape)
                contents = _in_memory(source)
                times: dict[str, list[float]] = {"engine": [], "engine-process": [], "skopeo": [], "limit": [],
                                                 "startup": []}
                for i in range(rounds):
                    order = (("engine", _engine), ("engine-process", _engine_process), ("skopeo", _skopeo),
                             ("limit", partial(_limit, contents)))
                    for tool, copy in order if i % 2 == 0 else order[::-1]:
                        with RegistryServer(Path(root), name=f"{tool}-{number}-{i}") as destination:
                            times[tool].append(copy(source, destination, f"bench/{tool}-{i}"))
                        shutil.rmtree(destination.root / f"{destination.name}-data", ignore_errors=True)
                    times["startup"].append(_startup())
                engine, skopeo, process, limit, startup = (
                    statistics.median(times[tool]) for tool in ("engine", "skopeo", "engine-process", "limit",
                                                                "startup"))
                figures[name] = {"engine_s": engine, "engine_process_s": process, "skopeo_s": skopeo,
                                 "ratio": engine / skopeo, "process_ratio": process / skopeo,
                                 "limit_s": limit, "startup_s": startup, "limit_ratio": limit / skopeo,
                                 "process_limit_ratio": (limit + startup) / skopeo}
                print(f"{name:48s} engine {engine:5.3f} s = {engine / skopeo:.2f}x "
                      f"(limit {limit:5.3f} s = {limit / skopeo:.2f}x)   "
                      f"as a process {process:5.3f} s = {process / skopeo:.2f}x "
                      f"(limit {limit + startup:5.3f} s = {(limit + startup) / skopeo:.2f}x)   "
                      f"skopeo {skopeo:5.3f} s   median of {rounds}", flush=True)
    return figures


if __name__ == "__main__":
    run()
