"""`.ci/run` asks dpkg about every package `make test` checks and has apt-get install the ones not installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def makefile_packages() -> list[str]:
    tools = re.search(r"^TEST_TOOLS := (.*?)(?<!\\)\n", (ROOT / "Makefile").read_text(), re.MULTILINE | re.DOTALL)
    assert tools is not None
    return [pair.split("=")[1] for pair in tools.group(1).replace("\\\n", " ").split()]


def run_ci(tmp_path: Path, installed: list[str] | None) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """.ci/run with a PATH of bash, make and coreutils, an apt-get that records what it is asked and installs
    nothing, and (unless `installed` is None) a dpkg-query that reports `installed` as installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "make", "dirname", "id", "env", "cat", "grep"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or tool)
    calls = tmp_path / "apt-get.calls"
    fakes = {"apt-get": f'echo "$*" >> {calls}\n', "sudo": 'exec "$@"\n'}
    if installed is not None:
        fakes["dpkg-query"] = ('for pkg in ' + " ".join(installed) + '; do [ "$pkg" = "${@: -1}" ] && '
                               '{ printf "install ok installed"; exit 0; }; done; exit 1\n')
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}")
        (bin_dir / name).chmod(0o755)
    done = subprocess.run(["bash", str(ROOT / ".ci/run")], env={**os.environ, "PATH": str(bin_dir)},
                          capture_output=True, text=True, timeout=120, check=False)
    return done, calls.read_text().splitlines() if calls.exists() else []


def test_ci_run_installs_every_package_when_dpkg_knows_none(tmp_path: Path) -> None:
    # Given a machine with none of the test tools (no dpkg-query answers either)
    packages = makefile_packages()
    assert packages == ["docker-registry", "skopeo", "podman", "shellcheck", "uidmap", "docker.io", "busybox-static"]

    # When CI runs
    done, calls = run_ci(tmp_path, installed=None)

    # Then apt-get is asked for the Makefile's whole list; nothing arrived, so make test stops with its one line
    assert calls == ["update -qq", f"install -y -qq {' '.join(packages)}"]
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[0] == (
        f"error: make test needs these Debian packages: {' '.join(packages)} "
        f"(sudo apt-get install {' '.join(packages)}, or run .ci/run)")


def test_ci_run_installs_only_the_packages_dpkg_does_not_report_installed(tmp_path: Path) -> None:
    # Given dpkg reporting all but docker.io and busybox-static installed
    done, calls = run_ci(tmp_path, installed=["docker-registry", "skopeo", "podman", "shellcheck", "uidmap"])

    # Then apt-get installs exactly those two
    assert calls == ["update -qq", "install -y -qq docker.io busybox-static"]
