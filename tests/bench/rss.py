"""Peak RSS of a child process copying an image whose single layer is 1 GiB.

The parent pushes the layer streamed from a generator, then runs the copy in a child. The child
reports its own peak from /proc/self/status (VmHWM, which starts afresh at exec); getrusage's
ru_maxrss would not do: a forked child inherits the parent's high-water mark, and RUSAGE_CHILDREN
also counts the registries the parent ran.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.images import push_large_image
from tests.support.registry import RegistryServer

SIZE = 1 << 30
TARGET_MB = 150
PEAK_PREFIX = "peak-kb: "


def child(source: str, destination: str) -> None:
    from lambdas.mirror.oci.copy import copy_image
    from lambdas.mirror.oci.registry import RegistryClient

    result = copy_image(RegistryClient(source), "bench/big", RegistryClient(destination), "bench/big", "v1")
    status = Path("/proc/self/status").read_text()
    peak_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    print(f"{PEAK_PREFIX}{peak_kb} {result.bytes_copied} {result.destination_digest}", flush=True)


def run(*, size: int = SIZE) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as root, \
            RegistryServer(Path(root), name="source") as source, \
            RegistryServer(Path(root), name="destination") as destination:
        digest = push_large_image(source.host, "bench/big", "v1", size=size)
        started = time.perf_counter()
        process = subprocess.run([sys.executable, "-m", "tests.bench.rss", source.host, destination.host],
                                 capture_output=True, text=True, check=True)
        elapsed = time.perf_counter() - started
    line = next(x for x in process.stdout.splitlines() if x.startswith(PEAK_PREFIX))
    peak_kb, copied, copied_digest = line[len(PEAK_PREFIX):].split()
    if int(copied) < size or copied_digest != digest:
        raise RuntimeError(f"child copied {copied} bytes to {copied_digest}, expected {size} to {digest}")
    peak_mb = int(peak_kb) / 1024
    print(f"single {size / (1 << 30):.2f} GiB layer ({digest[:19]}): peak RSS {peak_mb:.1f} MB "
          f"(target < {TARGET_MB} MB), copy {elapsed:.1f} s incl. interpreter start", flush=True)
    return {"peak_rss_mb": peak_mb, "seconds": elapsed}


if __name__ == "__main__":
    if len(sys.argv) == 3:
        child(sys.argv[1], sys.argv[2])
    else:
        run()
