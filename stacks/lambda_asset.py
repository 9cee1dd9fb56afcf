"""The Lambda asset: `lambdas/`, the config model it shares with the constructs (`ecr_mirror_cdk`'s config,
config_*, reference, signing_key and yaml_source modules) and the packages of `lambdas/requirements.lock`, built
at synth without Docker.

CDK's local bundling (`BundlingOptions.local`, tried before any Docker image) copies the code and the locked
packages into the asset. The packages are installed once per lock file by pip (`--require-hashes`,
`--only-binary=:all:` for python3.13 on arm64) into `.lambda-deps/<lock sha256>/` and copied from there on
every later synth, so a synth downloads nothing once the lock has been installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

ROOT = Path(__file__).resolve().parent.parent
LAMBDAS_DIR = ROOT / "lambdas"
LIBRARY_DIR = ROOT / "ecr_mirror_cdk"
# What the handlers import of the library: no CDK (its __init__ loads constructs lazily).
MODEL = ["__init__.py", "config.py", "config_deployment.py", "config_fields.py", "config_images.py", "config_parse.py",
         "reference.py", "signing_key.py", "yaml_source.py"]
LOCK = LAMBDAS_DIR / "requirements.lock"
DEPS_CACHE = ROOT / ".lambda-deps"
# The functions' runtime and architecture (stacks/sync.py): pip picks wheels for them, not for this machine.
PIP_TARGET = ["--platform", "manylinux2014_aarch64", "--implementation", "cp", "--python-version", "3.13",
              "--only-binary=:all:"]
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", LOCK.name)


class AssetError(RuntimeError):
    """The locked packages could not be installed; the message is one line."""


def locked_packages(lock: Path = LOCK, cache: Path = DEPS_CACHE) -> Path:
    """The folder holding the lock's packages, installed into the cache on first use."""
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    folder = cache / digest
    if folder.is_dir():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=cache))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
         "--no-deps", "--require-hashes", *PIP_TARGET, "--target", str(staging), "-r", str(lock)],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        shown = lock.relative_to(ROOT) if lock.is_relative_to(ROOT) else lock
        raise AssetError(f"{shown}: pip could not install the Lambda packages: {last}")
    shutil.rmtree(staging / "bin", ignore_errors=True)  # console scripts for this machine, not the runtime
    try:
        os.rename(staging, folder)  # atomic: a synth running at the same time sees all of it or none
    except OSError:  # another synth got there first
        shutil.rmtree(staging, ignore_errors=True)
    return folder


@jsii.implements(ILocalBundling)
class _LocalBundling:
    def try_bundle(self, output_dir: str, *options: Any, **keywords: Any) -> bool:  # CDK passes the BundlingOptions
        build(Path(output_dir))
        return True


def build(output: Path, *, lock: Path = LOCK, cache: Path = DEPS_CACHE) -> None:
    """Write the asset into `output`: the handlers' code and the config model, then the locked packages."""
    shutil.copytree(LAMBDAS_DIR, output, ignore=_SKIP, dirs_exist_ok=True)
    (output / LIBRARY_DIR.name).mkdir(exist_ok=True)
    for name in MODEL:
        shutil.copy2(LIBRARY_DIR / name, output / LIBRARY_DIR.name / name)
    shutil.copytree(locked_packages(lock, cache), output, dirs_exist_ok=True)


def code() -> lambda_.Code:
    """The functions' code asset. The Docker image is never pulled: local bundling always succeeds. The packages
    are installed here, before CDK bundles, so that a failure is AssetError's one line (app.py prints it)."""
    locked_packages()
    # Hashed by what the bundle holds: the model lives outside `lambdas/`, and a change there must redeploy.
    return lambda_.Code.from_asset(str(LAMBDAS_DIR), asset_hash_type=AssetHashType.OUTPUT, bundling=BundlingOptions(
        image=DockerImage.from_registry("local-bundling-only"), local=_LocalBundling()))
