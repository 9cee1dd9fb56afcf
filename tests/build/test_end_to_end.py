"""End to end: the synthesized buildspec run as CodeBuild would, on a real Docker daemon, with moto as AWS,
a loopback "ECR" (blob GETs redirected to a loopback "S3", as ECR does) holding Docker Hub images under
`docker-hub/`, and Docker Hub itself unreachable, as it is on this machine.

The build's first step (ecr_mirror_cdk/setup as one archive, fetched from moto's S3) points the real dockerd at
the mirror endpoint; then `docker pull`, `docker run` and `DOCKER_BUILDKIT=1 docker build` (the daemon's built-in
BuildKit) all succeed offline, so nothing came from Docker Hub, and the registry's access log shows every
manifest came through the mirror. The buildx docker-container builder cannot run here (its moby/buildkit
image cannot be had offline): docker_shim.py has podman stand in for `docker buildx`, configured from the
buildkitd.toml the setup wrote (the same path semantics as BuildKit's mirrors).
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecr_mirror_cdk.config_parse import load_config
from ecr_mirror_cdk.setup.endpoint import stop_endpoint
from tests.build import cfn, codebuild_local
from tests.build.conftest import REPO, BuildApp, synth_build
from tests.support import dockerd
from tests.support.busybox import push_busybox
from tests.support.moto import fake_aws_environment, moto_client, moto_server
from tests.support.registry import RegistryServer

REQUIRED = ("podman", "skopeo", "docker-registry")
pytestmark = [
    pytest.mark.skipif(any(shutil.which(tool) is None for tool in REQUIRED),
                       reason=f"needs {', '.join(REQUIRED)} (.ci/run installs them)"),
    pytest.mark.skipif(dockerd.available() is not None, reason=str(dockerd.available())),
    pytest.mark.timeout(300),
]

SHA = "c0ffee1234567890abcdef1234567890abcdef12"
CREDENTIALS = {"username": "team", "accessToken": "dckr_pat_not_a_real_token"}
# As teams write it: a stage named like its base, images as sources. Nothing reads it but the builder, so
# what BuildKit makes of stages (forward `COPY --from`, `# syntax=` pins) is BuildKit's, with or without the mirror.
DOCKERFILE = """\
FROM busybox AS busybox
COPY app.txt /build/app.txt

FROM busybox
COPY --from=busybox /build/ /srv/
COPY --from=quay.io/org/tool:1 /tool /srv/tool
COPY --from={other}/tools/lint:1 /lint /srv/lint
"""


class S3:
    """Serves a registry's storage directory, as S3 serves ECR's layers: counts what it served."""

    def __init__(self, root: Path) -> None:
        served = self.served = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, format, *args):
                served.append(self.path)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


@dataclass
class World:
    tmp: Path
    hub: RegistryServer
    ecr: RegistryServer
    other: RegistryServer
    s3: S3
    daemon: dockerd.DockerDaemon
    env: dict[str, str]
    app: BuildApp
    source: Path

    def run_build(self, name: str, **overrides: str) -> codebuild_local.Result:
        """One CodeBuild build: the buildspec in bash with its env, podman storage of its own for buildx."""
        host = self.tmp / name
        host.mkdir()
        (host / "auth.json").write_text('{"auths": {}}')
        env = {**self.env, "SHIM_PODMAN_ROOT": str(host / "root"), "SHIM_PODMAN_RUNROOT": str(host / "run"),
               "REGISTRY_AUTH_FILE": str(host / "auth.json"), "HOME": str(host)}
        spec = cfn.buildspec(self.app.data, self.app.refs)
        with_secrets = codebuild_local.environment(
            spec, cfn.environment(self.app.data, self.app.refs), overrides,
            secretsmanager=moto_client("secretsmanager", self.env["AWS_ENDPOINT_URL"]),
        )
        return codebuild_local.run(spec, {**env, **with_secrets}, self.source, timeout=240)

    def setup_mirror(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The setup file the build fetched (the app's asset, the archive), run by hand."""
        return subprocess.run([sys.executable, str(self.app.assets[0]["path"]), *args],
                              env=self.env, capture_output=True, text=True, timeout=120)

    def skopeo(self, *args: str) -> bytes:
        result = subprocess.run(["skopeo", *args], env=self.env, capture_output=True)
        assert result.returncode == 0, f"skopeo {' '.join(args)}: {result.stderr.decode(errors='replace')}"
        return result.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("e2e")
    (tmp / "tmp").mkdir()
    ecr_root = tmp / "registries"
    s3 = S3(ecr_root / "ecr-data")
    hub = RegistryServer(ecr_root, name="hub").start()
    ecr = RegistryServer(ecr_root, name="ecr", redirect_to=s3.url).start()
    other = RegistryServer(ecr_root, name="other").start()
    daemon = dockerd.DockerDaemon().start()
    try:
        with moto_server() as endpoint:
            env = fake_aws_environment(endpoint)
            bin_dir = tmp / "bin"
            bin_dir.mkdir()
            shim = bin_dir / "docker"
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).with_name("docker_shim.py")}" "$@"\n')
            shim.chmod(0o755)
            env |= daemon.env | {
                "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{env['PATH']}",  # docker shim, then the aws CLI
                "SHIM_DOCKER_HUB": hub.host,
                "CODEBUILD_RESOLVED_SOURCE_VERSION": SHA,
                "CODEBUILD_BUILD_NUMBER": "7",
                "TMPDIR": str(tmp / "tmp"),
                # The setup's own files, beside the test's daemon (the daemon is found by DOCKER_HOST's socket).
                "MIRROR_ENDPOINT_PIDFILE": str(daemon.root / "mirror-endpoint.pid"),
                "MIRROR_DOCKERD_LOG": str(daemon.root / "docker.log"),
            }
            secret_arn = moto_client("secretsmanager", env["AWS_ENDPOINT_URL"]).create_secret(
                Name="ecr-pullthroughcache/docker-hub", SecretString=json.dumps(CREDENTIALS))["ARN"]
            app = synth_build(tmp / "cdk.out", load_config(REPO / "mirror.yaml"), registry_uri=ecr.host,
                              secret_arn=secret_arn)
            s3_client = moto_client("s3", env["AWS_ENDPOINT_URL"])
            for asset in app.assets:  # what `cdk deploy` publishes
                bucket = cfn.resolve({"Fn::Sub": asset["bucket"]})
                s3_client.create_bucket(Bucket=bucket)
                s3_client.upload_file(str(asset["path"]), bucket, asset["key"])
            source = tmp / "src"
            source.mkdir()
            (source / "app.txt").write_text("the app\n")
            (source / "Dockerfile").write_text(DOCKERFILE.format(other=other.host))
            # What the mirror holds: Docker Hub images under the cache prefix, the builder image as a direct copy,
            # a quay.io image under its prefix; and an image on a registry the mirror does not cover.
            push_busybox(ecr.host, "docker-hub/library/busybox", "latest", marker="served by the mirror\n")
            push_busybox(ecr.host, "docker-hub/tools/lint", "1", marker="lint",
                         extra={"/lint": "lint from the mirror\n"})
            push_busybox(ecr.host, "mirror/docker.io/moby/buildkit", "buildx-stable-1", marker="buildkit stand-in")
            push_busybox(ecr.host, "quay/org/tool", "1", marker="tool", extra={"/tool": "tool from quay's cache\n"})
            push_busybox(other.host, "tools/lint", "1", marker="other", extra={"/lint": "lint from elsewhere\n"})
            yield World(tmp, hub, ecr, other, s3, daemon, env, app, source)
    finally:
        stop_endpoint(daemon.root / "mirror-endpoint.pid")
        daemon.stop()
        for server in (hub, ecr, other):
            server.stop()
        s3.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def build(world):
    result = world.run_build("host1")
    print(result.output)
    assert result.returncode == 0, result.output
    return result


def manifest_paths(registry: RegistryServer) -> list[str]:
    return [r.path for r in registry.manifest_gets()]


# --- the build ----------------------------------------------------------------------------------------


def test_the_setup_points_the_daemon_at_the_mirror_endpoint_and_the_build_succeeds(world, build):
    assert "mirror: dockerd (pid " in build.output and f"from {world.ecr.host}" in build.output
    config = json.loads(world.daemon.config_path.read_text())
    (mirror,) = config["registry-mirrors"]
    assert mirror.startswith("http://127.0.0.1:")
    info = json.loads(world.daemon.docker("info", "--format", "{{json .RegistryConfig.Mirrors}}").stdout)
    assert [m.rstrip("/") for m in info] == [mirror]


def test_the_builder_image_comes_from_its_direct_copy_not_the_docker_hub_rule(world, build):
    assert any(p.startswith("/v2/mirror/docker.io/moby/buildkit/manifests/") for p in manifest_paths(world.ecr))
    assert not any(p.startswith("/v2/docker-hub/moby/buildkit/") for p in manifest_paths(world.ecr))


def test_every_image_of_the_dockerfile_came_from_the_mirror_and_docker_hub_saw_nothing(world, build):
    paths = manifest_paths(world.ecr)
    assert any(p.startswith("/v2/docker-hub/library/busybox/manifests/") for p in paths)
    assert any(p.startswith("/v2/quay/org/tool/manifests/") for p in paths)  # BuildKit's path mirror, via podman
    assert world.other.manifest_gets("tools/lint")  # not covered: pulled from where it lives
    assert [r for r in world.hub.requests() if "/manifests/" in r.path] == []  # only the Docker Hub login's /v2/


def test_the_built_image_is_what_the_dockerfile_says_stages_and_all(world, build):
    files = image_files(world, f"{world.ecr.host}/images:{SHA[:7]}")
    assert files["etc/marker"] == b"served by the mirror\n"
    assert files["srv/app.txt"] == b"the app\n"  # COPY --from=busybox is the stage, not the image
    assert files["srv/tool"] == b"tool from quay's cache\n"
    assert files["srv/lint"] == b"lint from elsewhere\n"


def test_the_build_log_ends_with_one_line_of_what_the_mirror_served(world, build):
    lines = [line for line in build.output.splitlines() if line.startswith("mirror: ") and "served" in line]
    assert len(lines) == 1, build.output
    assert "manifests served by the mirror (docker.io" in lines[0] and "no request fell back" in lines[0]


def test_the_first_build_says_once_that_there_is_no_build_cache_yet(world, build):
    lines = [line for line in build.output.splitlines() if line.startswith("no build cache yet for ")]
    assert lines == [f"no build cache yet for {world.ecr.host}/images-cache:images--linux-amd64--main"]


def test_the_image_is_pushed_and_exported_for_pipelines(world, build):
    uri = f"{world.ecr.host}/images:{SHA[:7]}"
    pushed = json.loads(world.skopeo("inspect", "--tls-verify=false", f"docker://{uri}"))
    assert pushed["Digest"] == build.exported["IMAGE_DIGEST"]
    assert build.exported["IMAGE_URI"] == uri
    assert json.loads((world.source / "imagedefinitions.json").read_text()) == [{"name": "app", "imageUri": uri}]


def test_the_docker_hub_token_never_reaches_the_log(world, build):
    assert CREDENTIALS["accessToken"] not in build.output


# --- the daemon, after the build's setup: what test commands (docker pull/run/build) get -------------------


def test_docker_pull_comes_through_the_mirror_with_layers_from_s3(world, build):
    before = len(world.ecr.manifest_gets("docker-hub/library/busybox"))
    served = len(world.s3.served)
    world.daemon.docker("rmi", "-f", "busybox", check=False)
    world.daemon.docker("pull", "busybox")
    assert len(world.ecr.manifest_gets("docker-hub/library/busybox")) > before
    assert len(world.s3.served) > served  # the endpoint passed ECR's redirect on; the daemon fetched from "S3"
    redirects = [r for r in world.ecr.requests() if "/blobs/" in r.path and r.status == 307]
    assert redirects


def test_docker_run_runs_the_mirrors_image(world, build):
    result = world.daemon.docker("run", "--rm", "--network", "none", "tools/lint:1", "cat", "/lint")
    assert result.stdout == "lint from the mirror\n"


def test_docker_build_on_the_default_builder_pulls_through_the_mirror(world, build, tmp_path):
    """The daemon's built-in BuildKit, which keeps the mirrors it started with: the setup restarted dockerd."""
    (tmp_path / "app.txt").write_text("the app\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox AS busybox\nRUN echo built-by-the-stage > /stage.txt\nCOPY app.txt /app.txt\n"
        "FROM busybox AS final\nCOPY --from=busybox /stage.txt /app.txt /\nCOPY --from=tools/lint:1 /lint /lint\n")
    for image in ("busybox", "tools/lint:1"):
        world.daemon.docker("rmi", "-f", image, check=False)
    before = len(world.ecr.manifest_gets())
    result = subprocess.run([dockerd.CLIENT, "build", "--network", "none", "--target", "final", "-t", "local-build",
                             str(tmp_path)],
                            env={**world.env, "DOCKER_BUILDKIT": "1"}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(world.ecr.manifest_gets()) > before
    output = world.daemon.docker("run", "--rm", "--network", "none", "local-build", "cat", "/stage.txt",
                                 "/app.txt", "/lint")
    assert output.stdout == "built-by-the-stage\nthe app\nlint from the mirror\n"


def test_a_pull_the_mirror_cannot_serve_falls_back_and_the_report_says_why(world, build):
    result = world.daemon.docker("pull", "library/not-mirrored:1", check=False)
    assert result.returncode != 0  # Docker Hub is unreachable here
    report = world.setup_mirror("--report")
    assert "fell back to the upstream: docker.io/library/not-mirrored:1 (mirror/docker.io/library/not-mirrored: " \
        "404 MANIFEST_UNKNOWN (manifest unknown); docker-hub/library/not-mirrored: 404" in report.stdout, report.stdout


# --- bad input leaves the daemon as it was, and the build goes on -------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--registry", "127.0.0.1:1"], "registry 127.0.0.1:1 is unreachable"),
    (["--map", "{not json"], "--map is not JSON"),
    (["--map", '{"prefixes": {"docker.io": "Docker Hub"}}'], "--map: prefixes: 'docker.io'"),
])
def test_bad_input_is_one_line_and_changes_nothing(world, build, args, message):
    config_before = world.daemon.config_path.read_bytes()
    pid_before = world.daemon.pid()
    if "--registry" not in args:
        args = ["--registry", world.ecr.host, *args]
    result = world.setup_mirror(*args)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("mirror: not set up: ")
    assert message in result.stdout
    assert result.stdout.rstrip().endswith("what an earlier run of this build set up stays as it was")
    assert world.daemon.config_path.read_bytes() == config_before
    assert world.daemon.pid() == pid_before
    world.daemon.docker("pull", "busybox")  # the mirror still serves


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
