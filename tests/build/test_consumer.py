"""Another team's CDK app installs ecr-mirror-cdk from a wheel built offline into a fresh venv, beside its own
`stacks/` and `lambdas/` packages, adopts three kinds of project and synthesizes with cdk-nag; the adopted
inline project's install phase then points the real dockerd at the mirror."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ecr_mirror_cdk.buildspec import SETUP_LINE
from ecr_mirror_cdk.config_parse import load_config
from ecr_mirror_cdk.contract import mirror_map
from tests.build import cfn, codebuild_local
from tests.build.test_end_to_end import REQUIRED, world  # noqa: F401 - the fixture: dockerd, loopback ECR, moto
from tests.support import dockerd
from tests.support.moto import moto_client

REPO = Path(__file__).resolve().parents[2]
CONSUMER = REPO / "tests" / "consumer"
REGISTRY = "111122223333.dkr.ecr.us-east-1.amazonaws.com"


def build_wheel(out: Path) -> Path:
    """`pip wheel` of this repository, offline: the venv's setuptools, no build isolation, no dependencies. From a
    copy of what the wheel is made of, so that setuptools' build/ and egg-info never land in the checkout."""
    source = out / "source"
    shutil.copytree(REPO / "ecr_mirror_cdk", source / "ecr_mirror_cdk", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--wheel-dir", str(out), str(source)], check=True, capture_output=True, text=True)
    (wheel,) = out.glob("ecr_mirror_cdk-*.whl")
    return wheel


def fresh_venv(root: Path, wheel: Path) -> Path:
    """A new venv holding the wheel; its dependencies (aws-cdk-lib, cdk-nag) come from this venv, offline,
    through a .pth file read after the new venv's own packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    with zipfile.ZipFile(wheel) as archive:  # what pip does for a pure wheel: unpack it into site-packages
        archive.extractall(site)
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("consumer")
    wheel = build_wheel(root / "dist")
    python = fresh_venv(root / "venv", wheel)
    app = root / "app"
    shutil.copytree(CONSUMER, app)
    context = {"registry_uri": REGISTRY, "mirror_map": mirror_map(load_config(REPO / "mirror.yaml"))}
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"CDK_OUTDIR": str(root / "cdk.out"), "CDK_CONTEXT_JSON": json.dumps(context),
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}  # the venv's Node 24 for jsii
    done = subprocess.run([str(python), "app.py"], cwd=app, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((root / "cdk.out" / "Team.template.json").read_text())
    return {"root": root, "wheel": wheel, "stderr": done.stderr, "data": data, "outdir": root / "cdk.out"}


def project(data: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [r["Properties"] for k, r in data["Resources"].items()
                if r["Type"] == "AWS::CodeBuild::Project" and k.startswith(name)]
    return found


def spec(data: dict[str, Any], name: str) -> dict[str, Any]:
    return json.loads(cfn.resolve(project(data, name)["Source"]["BuildSpec"], {}))


def test_the_wheel_holds_the_library_and_its_setup_file_and_nothing_of_the_app(consumer: dict[str, Any]) -> None:
    names = zipfile.ZipFile(consumer["wheel"]).namelist()
    assert {"ecr_mirror_cdk/adopt.py", "ecr_mirror_cdk/setup_archive.py", "ecr_mirror_cdk/setup/__main__.py",
            "ecr_mirror_cdk/setup/cli.py", "ecr_mirror_cdk/setup/endpoint.py"} <= set(names)
    assert not [n for n in names if n.startswith(("stacks/", "lambdas/", "tests/"))]


def test_the_app_imports_the_installed_library_beside_its_own_stacks_and_lambdas(consumer: dict[str, Any]) -> None:
    line = consumer["stderr"].strip().splitlines()[-1]
    assert line.startswith("ecr_mirror_cdk 0.1.0 from ") and str(consumer["root"] / "venv") in line
    assert line.endswith("lambdas of the team")


def test_the_three_projects_are_adopted_each_as_its_kind_allows(consumer: dict[str, Any]) -> None:
    data = consumer["data"]
    assert spec(data, "Inline")["phases"]["install"]["commands"][0] == SETUP_LINE
    assert spec(data, "Inline")["phases"]["build"]["commands"] == ["docker pull busybox"]
    assert spec(data, "Runner") == {"version": "0.2", "phases": {"install": {"commands": [SETUP_LINE]}}}
    assert project(data, "File")["Source"]["BuildSpec"] == "ci/buildspec.yml"
    for name in ("Inline", "Runner", "File"):
        variables = {v["Name"] for v in project(data, name)["Environment"]["EnvironmentVariables"]}
        assert {"MIRROR_REGISTRY", "MIRROR_MAP", "MIRROR_SETUP_BUCKET", "MIRROR_SETUP_KEY"} <= variables


@pytest.mark.skipif(any(shutil.which(tool) is None for tool in REQUIRED),
                    reason=f"needs {', '.join(REQUIRED)} (.ci/run installs them)")
@pytest.mark.skipif(dockerd.available() is not None, reason=str(dockerd.available()))
@pytest.mark.timeout(300)
def test_the_adopted_inline_project_pulls_through_the_mirror_on_the_real_dockerd(
        consumer: dict[str, Any], world: Any, tmp_path: Path) -> None:  # noqa: F811 - the imported fixture
    # Given the consumer's adopted inline project, its setup file published as cdk deploy would
    data = consumer["data"]
    manifest = json.loads((consumer["outdir"] / "Team.assets.json").read_text())
    (entry,) = [e for e in manifest["files"].values() if not e["source"]["path"].endswith(".template.json")]
    (destination,) = entry["destinations"].values()
    # The values CloudFormation gives the project's MIRROR_ variables, pointed at the loopback mirror
    variables = {"MIRROR_REGISTRY": world.ecr.host, "MIRROR_MAP": mirror_map(load_config(REPO / "mirror.yaml")),
                 "MIRROR_SETUP_BUCKET": "team-assets", "MIRROR_SETUP_KEY": destination["objectKey"]}
    s3 = moto_client("s3", world.env["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket="team-assets")
    s3.upload_file(str(consumer["outdir"] / entry["source"]["path"]), "team-assets", destination["objectKey"])
    source = tmp_path / "src"
    source.mkdir()

    # When CodeBuild runs its install and build phases
    before = len(world.ecr.manifest_gets("docker-hub/library/busybox"))
    world.daemon.docker("rmi", "-f", "busybox", check=False)
    result = codebuild_local.run(spec(data, "Inline"), {**world.env, **variables, "HOME": str(tmp_path)}, source)

    # Then its docker pull came from the loopback ECR, and Docker Hub served no manifest
    assert result.returncode == 0, result.output
    assert len(world.ecr.manifest_gets("docker-hub/library/busybox")) > before
    assert [r for r in world.hub.requests() if "/manifests/" in r.path] == []
