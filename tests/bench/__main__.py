"""`python -m tests.bench`: run every benchmark module present, in a fixed order, and print figures."""

from __future__ import annotations

import importlib
import sys

MODULES = ("copy_speed", "rss", "resync")


def main() -> int:
    for name in MODULES:
        qualified = f"{__package__}.{name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as err:
            if err.name != qualified:
                raise
            print(f"== {name}: not present, skipped")
            continue
        print(f"== {name}", flush=True)
        module.run()
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
