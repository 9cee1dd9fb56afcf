"""`python -m tests.bench [NAME ...]`: run the benchmarks (all, or those named) in a fixed order and print their
figures: `make bench`, or `make bench ARGS=referrers` for one."""

from __future__ import annotations

import sys

from . import copy_speed, referrers, resync, rss

BENCHMARKS = {"copy_speed": copy_speed, "rss": rss, "resync": resync, "referrers": referrers}


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"error: no benchmark {unknown[0]!r} (there are {', '.join(BENCHMARKS)})", file=sys.stderr)
        return 2
    for name in names or list(BENCHMARKS):
        print(f"== {name}", flush=True)
        BENCHMARKS[name].run()
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
