"""`make test` runs every test file: pytest's default norecursedirs would silently skip tests/build."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_file_under_tests_is_collected():
    files = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")}
    listing = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    collected = {line.split("::", 1)[0] for line in listing.splitlines() if "::" in line}
    assert files - collected == set()
