"""Synthesize a small app holding only the build construct, cdk-nag on, as another CDK app would use it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import Stack, Validations
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from ecr_mirror_cdk.build import MirrorBuildProject
from ecr_mirror_cdk.config import Config
from ecr_mirror_cdk.config_parse import load_config, parse_config
from ecr_mirror_cdk.setup.endpoint import stop_endpoint
from ecr_mirror_cdk.setup_archive import write_setup_archive
from tests.build.host import Host
from tests.support import dockerd
from tests.support.busybox import push_busybox
from tests.support.cdk import cdk_app

REPO = Path(__file__).resolve().parents[2]
STACK = "BuildTest"
SECRET_NAME = "ecr-pullthroughcache/docker-hub"


@dataclass
class BuildApp:
    config: Config
    outdir: Path
    data: dict[str, Any]
    template: Template
    ids: dict[str, str]  # project, image_repository, cache_repository -> logical id

    @property
    def refs(self) -> dict[str, str]:
        """Stand-ins for the values CloudFormation fills in: repository names and ARNs, the log group."""
        refs = {self.ids["image_repository"]: "images", self.ids["cache_repository"]: "images-cache",
                self.ids["project"]: "mirror-build"}
        for name, logical_id in self.ids.items():
            refs[f"{logical_id}.Arn"] = f"arn:{name}"
        refs |= {k: k for k, r in self.data["Resources"].items() if r["Type"] == "AWS::Logs::LogGroup"}
        refs |= {f"{k}.Arn": f"arn:{k}" for k in refs if k.startswith("BuildLogs")}
        return refs

    @property
    def assets(self) -> list[dict[str, Any]]:
        """File assets (source path, bucket, key) as `cdk deploy` would publish them."""
        manifest = json.loads((self.outdir / f"{STACK}.assets.json").read_text())
        out = []
        for entry in manifest["files"].values():
            if entry["source"]["path"].endswith(".template.json"):
                continue
            for destination in entry["destinations"].values():
                out.append({"path": self.outdir / entry["source"]["path"],
                            "bucket": destination["bucketName"], "key": destination["objectKey"]})
        return out


def synth_build(outdir: Path, config: Config, *, registry_uri: str | None = None,
                secret_arn: str | None = None, options: Callable[[Stack], dict[str, Any]] | None = None) -> BuildApp:
    app = cdk_app(outdir)
    stack = Stack(app, STACK)
    if secret_arn:
        secret = secretsmanager.Secret.from_secret_complete_arn(stack, "DockerHub", secret_arn)
    else:
        secret = secretsmanager.Secret.from_secret_name_v2(stack, "DockerHub", SECRET_NAME)
    registry_uri = registry_uri or f"{stack.account}.dkr.ecr.{stack.region}.{stack.url_suffix}"
    build = MirrorBuildProject(stack, "Build", config=config, registry_uri=registry_uri, docker_hub_secret=secret,
                               **(options(stack) if options else {}))
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    ids = {name: stack.resolve(stack.get_logical_id(construct.node.default_child))
           for name, construct in (("project", build.project), ("image_repository", build.image_repository),
                                   ("cache_repository", build.cache_repository))}
    app.synth()  # raises on any unacknowledged cdk-nag finding
    data = json.loads((outdir / f"{STACK}.template.json").read_text())
    return BuildApp(config, outdir, data, Template.from_json(data), ids)


@pytest.fixture(scope="session")
def build_app(tmp_path_factory: pytest.TempPathFactory) -> BuildApp:
    """The repository's mirror.yaml, Docker Hub credentials in Secrets Manager."""
    return synth_build(tmp_path_factory.mktemp("build.out"), load_config(REPO / "mirror.yaml"))


@pytest.fixture(scope="session")
def ssm_build_app(tmp_path_factory: pytest.TempPathFactory) -> BuildApp:
    """A team set up as in the blog posts: Docker Hub credentials in SSM SecureString parameters."""
    config = parse_config({
        "images": [{"source": "python", "tags": ["3.12-slim"]}],
        "docker_hub_credentials": {"ssm_parameters": {"username": "/CodeBuild/DOCKER_HUB_ID",
                                                      "token": "/CodeBuild/DOCKER_HUB_PASSWORD"}},
    })
    return synth_build(tmp_path_factory.mktemp("build-ssm.out"), config)


def pipeline_options(stack: Stack) -> dict[str, Any]:
    """A pipeline defined elsewhere: its artifact bucket (KMS-encrypted), an S3 source bucket, a key, services."""
    return {
        "push_repositories": ["services/*", "tools/linter"],
        "artifact_buckets": [s3.Bucket.from_bucket_attributes(
            stack, "Artifacts", bucket_name="pipeline-artifacts",
            encryption_key=kms.Key.from_key_arn(stack, "ArtifactKey", ARTIFACT_KEY))],
        "source_buckets": [s3.Bucket.from_bucket_name(stack, "Sources", "team-sources")],
        "kms_keys": [kms.Key.from_key_arn(stack, "SourceKey", SOURCE_KEY)],
        "environment_image": "ecr-public/codebuild/amazonlinux-x86_64-standard:5.0",
    }


ARTIFACT_KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
SOURCE_KEY = "arn:aws:kms:us-east-1:123456789012:key/66666666-7777-8888-9999-000000000000"


@pytest.fixture(scope="session")
def pipeline_build_app(tmp_path_factory: pytest.TempPathFactory) -> BuildApp:
    return synth_build(tmp_path_factory.mktemp("build-pipeline.out"), load_config(REPO / "mirror.yaml"),
                       options=pipeline_options)


# --- build hosts: a real dockerd and the setup archive (tests/build/host.py) ------------------------------


@pytest.fixture(scope="session")
def setup_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file a build runs: the archive the app uploads, fetched to setup_mirror.py as the setup line does."""
    return write_setup_archive(tmp_path_factory.mktemp("setup") / "setup_mirror.py")


@pytest.fixture
def host_for(registry, setup_script: Path) -> Iterator[Callable[..., Host]]:
    """Start build hosts (a dockerd each, `dockerd.DockerDaemon` options) on the test's registry holding busybox;
    every daemon, its containers and the endpoint a setup started are stopped when the test ends."""
    started: list[Host] = []
    push_busybox(registry.host, "docker-hub/library/busybox", "latest", marker="m")

    def start(*, running: bool = True, **options: Any) -> Host:
        daemon = dockerd.DockerDaemon(**options)
        host = Host(daemon.start() if running else daemon, registry, setup_script)
        started.append(host)
        return host

    yield start
    for host in started:
        stop_endpoint(host.endpoint_pidfile)
        host.daemon.stop()
