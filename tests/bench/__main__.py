"""`python -m tests.bench`: run the benchmarks in a fixed order and print their figures."""

from __future__ import annotations

import sys

from . import copy_speed, resync, rss


def main() -> int:
    for name, module in (("copy_speed", copy_speed), ("rss", rss), ("resync", resync)):
        print(f"== {name}", flush=True)
        module.run()
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
