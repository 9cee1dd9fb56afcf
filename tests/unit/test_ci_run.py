"""`.ci/run` on a machine with none of the test tools: it asks apt-get for every package `make test` checks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_run_installs_every_package_the_test_tool_check_names(tmp_path: Path) -> None:
    # Given a PATH with bash, make and coreutils only, and an apt-get that records what it is asked and installs nothing
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "make", "dirname", "id", "env", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or tool)
    calls = tmp_path / "apt-get.calls"
    for fake in ("apt-get", "sudo"):
        script = bin_dir / fake
        body = f'echo "$*" >> {calls}\n' if fake == "apt-get" else 'exec "$@"\n'
        script.write_text(f"#!/bin/bash\n{body}")
        script.chmod(0o755)

    # When CI runs
    done = subprocess.run(["bash", str(ROOT / ".ci/run")], env={**os.environ, "PATH": str(bin_dir)},
                          capture_output=True, text=True, timeout=120, check=False)

    # Then apt-get was asked for the Makefile's whole list, and the run stops with one line since nothing arrived
    tools = re.search(r"^TEST_TOOLS := (.*?)(?<!\\)\n", (ROOT / "Makefile").read_text(), re.MULTILINE | re.DOTALL)
    assert tools is not None
    packages = [pair.split("=")[1] for pair in tools.group(1).replace("\\\n", " ").split()]
    assert packages == ["docker-registry", "skopeo", "podman", "shellcheck", "uidmap", "docker.io", "busybox-static"]
    assert calls.read_text().splitlines() == ["update -qq", f"install -y -qq {' '.join(packages)}"]
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: apt-get installed, but these are still missing: {' '.join(packages)}")
