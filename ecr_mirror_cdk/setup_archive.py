"""The build host's setup (the `setup` package) as one runnable file: a zip archive with `__main__.py` at its root.

CPython runs a zip archive given as the script, whatever its file name (Python docs, "zipapp" and "Command line:
<script>"), so builds fetch it as `setup_mirror.py` and run `python3 setup_mirror.py`, as lines that fetched the
single-file module before it do. The bytes depend on the sources only (fixed order, timestamps and modes, stored
uncompressed, so no zlib version enters), which keeps the CDK asset hash the same across clones and synths;
`zipapp.create_archive` would take each file's mtime.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import zipfile
from pathlib import Path
from typing import NoReturn

PACKAGE = Path(__file__).resolve().parent
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can hold
MAIN = ('"""Runs the ECR mirror\'s build host setup from this archive (built by ecr_mirror_cdk/setup_archive.py)."""\n'
        "import sys\n\nfrom ecr_mirror_cdk.setup.cli import main\n\nsys.exit(main())\n")


def setup_archive() -> bytes:
    """The archive: `__main__.py`, the package's `__init__.py` (names only, loaded lazily) and `setup/*.py`."""
    files = [("__main__.py", MAIN.encode()), ("ecr_mirror_cdk/__init__.py", (PACKAGE / "__init__.py").read_bytes())]
    files += [(f"ecr_mirror_cdk/setup/{path.name}", path.read_bytes())
              for path in sorted((PACKAGE / "setup").glob("*.py"))]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files:
            entry = zipfile.ZipInfo(name, FIXED_TIME)
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, data)
    return buffer.getvalue()


def write_setup_archive(path: Path) -> Path:
    """Write the archive to `path` (replaced whole, never half-written); `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(setup_archive())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line: argparse would print the whole usage block before the message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """By hand: `python3 -m ecr_mirror_cdk.setup_archive [FILE]` writes the archive and prints its path."""
    parser = _Parser(prog="python3 -m ecr_mirror_cdk.setup_archive",
                     description="Write the build host's setup as one runnable file (a zip archive Python runs).")
    parser.add_argument("file", nargs="?", default="setup_mirror.pyz", metavar="FILE",
                        help="where to write it (default: setup_mirror.pyz)")
    args = parser.parse_args(argv)
    try:
        print(write_setup_archive(Path(args.file)))
    except OSError as err:
        print(f"{parser.prog}: error: cannot write {args.file}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
