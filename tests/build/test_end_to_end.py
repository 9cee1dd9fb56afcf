"""End to end: the synthesized buildspec run as CodeBuild would, with podman as docker, moto as AWS and
loopback registries as Docker Hub, the ECR mirror and a registry the mirror does not cover.

The sample Dockerfile names Docker Hub images as teams write them (`python:3.12-slim`, a multi-stage build,
`COPY --from=<image>`) and is not edited. podman resolves `docker.io` to the fake Docker Hub
(registries.conf), so any base the redirect missed would show up in that registry's access log.

podman 4.3 cannot stand in for everything BuildKit does; docker_shim.py lists what it maps and drops
(`--cache-to ...,mode=max,image-manifest=true,oci-mediatypes=true`, `--metadata-file`, builders), and
test_project.py covers those flags statically. One more difference: podman matches `--build-context` names
against a FROM's text *before* ARG substitution, BuildKit after it, so ARG-built FROMs are covered by the
unit tests of the resolution (test_redirect.py), not here.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from lambdas.mirror.config import load_config
from tests.build import cfn, codebuild_local
from tests.build.conftest import REPO, BuildApp, synth_build
from tests.support.moto import fake_aws_environment, moto_client, moto_server
from tests.support.registry import RegistryServer

REQUIRED = ("podman", "skopeo", "docker-registry")
pytestmark = [
    pytest.mark.skipif(any(shutil.which(tool) is None for tool in REQUIRED),
                       reason=f"needs {', '.join(REQUIRED)} (.ci/run installs them)"),
    pytest.mark.timeout(240),
]

SHA = "c0ffee1234567890abcdef1234567890abcdef12"
CREDENTIALS = {"username": "team", "accessToken": "dckr_pat_not_a_real_token"}
DOCKERFILE = """\
# syntax=docker/dockerfile:1
# Written for Docker Hub; the build redirects it to the mirror without an edit.
FROM python:3.12-slim AS build
COPY app.txt /build/app.txt

FROM --platform=linux/amd64 python:3.12-slim
COPY --from=build /build/app.txt /srv/app.txt
COPY --from=docker.io/library/python:3.12-slim /etc/base-marker /srv/base-marker
COPY --from={other}/tools/lint:1 /tool /srv/tool
"""


@dataclass
class World:
    tmp: Path
    hub: RegistryServer
    ecr: RegistryServer
    other: RegistryServer
    env: dict[str, str]
    app: BuildApp
    source: Path

    def podman(self, root: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        command = ["podman", "--root", str(self.tmp / root / "root"), "--runroot", str(self.tmp / root / "run"),
                   "--storage-driver", "vfs", "--events-backend", "none", *args]
        result = subprocess.run(command, env=self.env, input=stdin, capture_output=True)
        assert result.returncode == 0, f"{' '.join(args)}: {result.stderr.decode(errors='replace')}"
        return result

    def publish(self, files: dict[str, str], *destinations: str) -> None:
        """Build a tiny image from scratch holding `files` and push it to each destination."""
        context = self.tmp / "images" / destinations[0].replace("/", "_").replace(":", "_")
        context.mkdir(parents=True)
        lines = ["FROM scratch"]
        for index, (path, content) in enumerate(files.items()):
            (context / f"f{index}").write_text(content)
            lines.append(f"COPY f{index} {path}")
        (context / "Containerfile").write_text("\n".join(lines) + "\n")
        self.podman("setup", "build", "--isolation", "chroot", "-t", destinations[0], str(context))
        for destination in destinations:
            self.podman("setup", "push", "--tls-verify=false", destinations[0], destination)

    def run_build(self, name: str, **overrides: str) -> codebuild_local.Result:
        """One CodeBuild build on a fresh host: podman storage of its own, nothing cached locally."""
        host = self.tmp / name
        host.mkdir()
        (host / "auth.json").write_text('{"auths": {}}')
        env = {**self.env, "SHIM_PODMAN_ROOT": str(host / "root"), "SHIM_PODMAN_RUNROOT": str(host / "run"),
               "REGISTRY_AUTH_FILE": str(host / "auth.json"), "TMPDIR": str(self.tmp / "tmp")}
        spec = cfn.buildspec(self.app.data, self.app.refs)
        with_secrets = codebuild_local.environment(
            spec, cfn.environment(self.app.data, self.app.refs), overrides,
            secretsmanager=moto_client("secretsmanager", self.env["AWS_ENDPOINT_URL"]),
        )
        return codebuild_local.run(spec, {**env, **with_secrets}, self.source, timeout=180)

    def skopeo(self, *args: str) -> bytes:
        result = subprocess.run(["skopeo", *args], env=self.env, capture_output=True)
        assert result.returncode == 0, f"skopeo {' '.join(args)}: {result.stderr.decode(errors='replace')}"
        return result.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("e2e")
    (tmp / "tmp").mkdir()
    servers = [RegistryServer(tmp / "registries", name=name).start() for name in ("hub", "ecr", "other")]
    hub, ecr, other = servers
    try:
        with moto_server() as endpoint:
            env = fake_aws_environment(endpoint)
            bin_dir = tmp / "bin"
            bin_dir.mkdir()
            shim = bin_dir / "docker"
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).with_name("docker_shim.py")}" "$@"\n')
            shim.chmod(0o755)
            (tmp / "setup-auth.json").write_text('{"auths": {}}')
            registries_conf = tmp / "registries.conf"
            registries_conf.write_text(
                f'[[registry]]\nprefix = "docker.io"\nlocation = "{hub.host}"\ninsecure = true\n')
            env |= {
                "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{env['PATH']}",  # docker shim, then the aws CLI
                "CONTAINERS_REGISTRIES_CONF": str(registries_conf),
                "REGISTRY_AUTH_FILE": str(tmp / "setup-auth.json"),
                "SHIM_DOCKER_HUB": hub.host,
                "CODEBUILD_RESOLVED_SOURCE_VERSION": SHA,
                "CODEBUILD_BUILD_NUMBER": "7",
                "TMPDIR": str(tmp / "tmp"),
            }
            secret_arn = moto_client("secretsmanager", env["AWS_ENDPOINT_URL"]).create_secret(
                Name="ecr-pullthroughcache/docker-hub", SecretString=json.dumps(CREDENTIALS))["ARN"]
            config = load_config(REPO / "mirror.yaml")
            app = synth_build(tmp / "cdk.out", config, registry_uri=ecr.host, secret_arn=secret_arn)
            s3 = moto_client("s3", env["AWS_ENDPOINT_URL"])
            for asset in app.assets:  # what `cdk deploy` publishes
                bucket = cfn.resolve({"Fn::Sub": asset["bucket"]})
                s3.create_bucket(Bucket=bucket)
                s3.upload_file(str(asset["path"]), bucket, asset["key"])
            source = tmp / "src"
            source.mkdir()
            (source / "app.txt").write_text("the app\n")
            (source / "Dockerfile").write_text(DOCKERFILE.format(other=other.host))
            world = World(tmp, hub, ecr, other, env, app, source)
            # What the mirror serves, what Docker Hub would serve, and an image the mirror does not cover.
            world.publish({"/etc/base-marker": "served by the mirror\n"},
                          f"{ecr.host}/docker-hub/library/python:3.12-slim")
            world.publish({"/etc/base-marker": "served by Docker Hub\n"}, f"{hub.host}/library/python:3.12-slim")
            world.publish({"/buildkitd": "stand-in\n"}, f"{ecr.host}/docker-hub/moby/buildkit:buildx-stable-1")
            world.publish({"/tool": "lint\n"}, f"{other.host}/tools/lint:1")
            yield world
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def first_build(world):
    hub_before = len(world.hub.manifest_gets())
    result = world.run_build("host1")
    print(result.output)
    assert result.returncode == 0, result.output
    return result, world.hub.manifest_gets()[hub_before:]


def image_uri(world: World, tag: str) -> str:
    return f"{world.ecr.host}/images:{tag}"


def test_the_build_succeeds_and_prints_each_redirect(world, first_build):
    result, _ = first_build
    mirror = f"{world.ecr.host}/docker-hub/library/python:3.12-slim"
    assert f"mirror: FROM (line 3): python:3.12-slim -> {mirror}" in result.output
    assert f"mirror: COPY --from (line 8): docker.io/library/python:3.12-slim -> {mirror}" in result.output
    assert f"{world.other.host}/tools/lint:1 left as is" in result.output


def test_docker_hub_saw_not_one_manifest_get(world, first_build):
    _, hub_gets = first_build
    assert hub_gets == []


def test_the_bases_and_the_builder_image_came_from_the_mirror(world, first_build):
    assert world.ecr.manifest_gets("docker-hub/library/python")
    assert world.ecr.manifest_gets("docker-hub/moby/buildkit")


def test_images_the_mirror_does_not_cover_are_pulled_from_where_they_live(world, first_build):
    assert world.other.manifest_gets("tools/lint")


def test_the_image_is_pushed_with_the_short_sha_and_latest(world, first_build):
    result, _ = first_build
    pushed = json.loads(world.skopeo("inspect", "--tls-verify=false", f"docker://{image_uri(world, SHA[:7])}"))
    latest = json.loads(world.skopeo("inspect", "--tls-verify=false", f"docker://{image_uri(world, 'latest')}"))
    assert pushed["Digest"] == latest["Digest"] == result.exported["IMAGE_DIGEST"]
    assert result.exported["IMAGE_URI"] == image_uri(world, SHA[:7])


def test_the_image_holds_the_mirrors_base_and_the_uncovered_tool(world, first_build):
    files = image_files(world, image_uri(world, SHA[:7]))
    assert files["srv/base-marker"] == b"served by the mirror\n"
    assert files["srv/app.txt"] == b"the app\n"
    assert files["srv/tool"] == b"lint\n"


def test_pipeline_artifacts_name_the_pushed_image(world, first_build):
    uri = image_uri(world, SHA[:7])
    assert json.loads((world.source / "imagedefinitions.json").read_text()) == [{"name": "app", "imageUri": uri}]
    assert json.loads((world.source / "imageDetail.json").read_text()) == {"ImageURI": uri}


def test_the_docker_hub_token_never_reaches_the_log(world, first_build):
    result, _ = first_build
    assert CREDENTIALS["accessToken"] not in result.output


def test_a_second_host_reuses_the_ecr_cache_for_every_stage(world, first_build):
    """podman's registry cache (per-step images) stands in for BuildKit's mode=max cache manifest."""
    result = world.run_build("host2", IMAGE_TAG="second")
    assert result.returncode == 0, result.output
    assert world.ecr.manifest_gets("images-cache")
    assert result.output.count("Using cache") >= 2, result.output  # the build stage's COPY and the final stage's


def test_without_the_redirect_the_same_base_would_come_from_docker_hub(world, first_build):
    """The control: podman resolves python:3.12-slim to the fake Docker Hub, so the 0 above is meaningful."""
    before = len(world.hub.manifest_gets())
    world.podman("control", "pull", "--tls-verify=false", "python:3.12-slim")
    assert len(world.hub.manifest_gets("library/python")) > before


def image_files(world: World, reference: str) -> dict[str, bytes]:
    """Every regular file of an image's layers (later layers win), read with skopeo, no container engine."""
    target = world.tmp / "inspect" / reference.rsplit(":", 1)[1]
    target.parent.mkdir(exist_ok=True)
    world.skopeo("copy", "--src-tls-verify=false", f"docker://{reference}", f"dir:{target}")
    manifest = json.loads((target / "manifest.json").read_text())
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        data = (target / layer["digest"].split(":", 1)[1]).read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive.getmembers():
                if member.isfile():
                    files[member.name.lstrip("./")] = archive.extractfile(member).read()
    return files
