"""Peak RSS of a child process copying an image whose single layer is 1 GiB.

The parent pushes the layer streamed from a generator, then runs the copy in a child and reads the
child's own peak RSS from os.wait4 (RUSAGE_CHILDREN would also count the registries it ran).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.images import push_large_image
from tests.support.registry import RegistryServer

SIZE = 1 << 30
TARGET_MB = 150


def child(source: str, destination: str) -> None:
    from lambdas.mirror.copy import copy_image
    from lambdas.mirror.registry import RegistryClient

    result = copy_image(RegistryClient(source), "bench/big", RegistryClient(destination), "bench/big", "v1")
    print(f"copied {result.bytes_copied / (1 << 20):.0f} MiB, digest {result.destination_digest}", flush=True)


def run(*, size: int = SIZE) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as root, \
            RegistryServer(Path(root), name="source") as source, \
            RegistryServer(Path(root), name="destination") as destination:
        digest = push_large_image(source.host, "bench/big", "v1", size=size)
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "tests.bench.rss", source.host, destination.host])
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        if process.returncode != 0:
            raise RuntimeError(f"copy child exited with {process.returncode}")
    peak_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
    print(f"single {size / (1 << 30):.2f} GiB layer ({digest[:19]}): peak RSS {peak_mb:.1f} MB "
          f"(target < {TARGET_MB} MB), copy {elapsed:.1f} s incl. interpreter start", flush=True)
    return {"peak_rss_mb": peak_mb, "seconds": elapsed}


if __name__ == "__main__":
    if len(sys.argv) == 3:
        child(sys.argv[1], sys.argv[2])
    else:
        run()
