"""Synthesize the app once per session, as `cdk synth` would (cdk-nag plugin on), into a tmp cloud assembly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from app import build
from ecr_mirror_cdk.config import Config
from ecr_mirror_cdk.config_parse import load_config, parse_config
from tests.support.cdk import cdk_app

REPO = Path(__file__).resolve().parents[2]
STACK = "EcrMirror"


@dataclass
class Synthesized:
    config: Config
    outdir: Path
    data: dict[str, Any]  # the template as the CLI would read it
    template: Template

    def logical_id(self, resource_type: str, **properties: Any) -> str:
        """The one resource of a type whose properties include `properties`."""
        found = [
            key
            for key, res in self.data["Resources"].items()
            if res["Type"] == resource_type
            and all(res.get("Properties", {}).get(k) == v for k, v in properties.items())
        ]
        assert len(found) == 1, f"{resource_type} {properties}: found {found}"
        return found[0]

    def by_path(self, path: str) -> str:
        """Logical id of the resource at a construct path below the stack, e.g. `Sync/PlannerRole`."""
        wanted = f"{STACK}/{path}/Resource"
        found = [k for k, r in self.data["Resources"].items() if r.get("Metadata", {}).get("aws:cdk:path") == wanted]
        assert len(found) == 1, f"{wanted}: found {found}"
        return found[0]


def synthesize(config: Config, outdir: Path) -> Synthesized:
    app = cdk_app(outdir, **{"aws:cdk:enable-path-metadata": True})
    build(app, config)
    app.synth()  # raises when cdk-nag reports an unacknowledged finding
    data = json.loads((outdir / f"{STACK}.template.json").read_text())
    return Synthesized(config, outdir, data, Template.from_json(data))


@pytest.fixture(scope="session")
def default_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The repository's own mirror.yaml."""
    return synthesize(load_config(REPO / "mirror.yaml"), tmp_path_factory.mktemp("cdk.out"))


# A team that already has its secrets: existing Docker Hub secret, SSM parameters for the build,
# a credentialed GitHub rule, a private self-hosted registry, another mirror prefix and a shorter expiry.
VARIANT = {
    "images": [
        {"source": "ghcr.io/org/app", "tags": ["1.0"]},
        {"source": "registry.example.com:5000/team/base", "tag_regex": r"v\d+"},
    ],
    "schedule": "cron(0 3 * * ? *)",
    "pull_through_cache": [
        {"upstream": "docker-hub", "prefix": "hub"},
        {
            "upstream": "github-container-registry",
            "prefix": "ghcr",
            "credentials_secret": "ecr-pullthroughcache/github",
        },
    ],
    "docker_hub_credentials": {
        "secret_name": "ecr-pullthroughcache/team-hub",
        "existing_secret": True,
        "ssm_parameters": {"username": "/CodeBuild/DOCKER_HUB_ID", "token": "/CodeBuild/DOCKER_HUB_PASSWORD"},
    },
    "sync": {"quota_reserve": 50, "max_concurrency": 2},
    "repositories": {"prefix": "cache", "tag_mutability": "MUTABLE", "untagged_expiry_days": 3},
    # The self-hosted registry's images are copied directly, logged in with this secret.
    "registry_credentials": {"registry.example.com:5000": "team/registry"},
}


@pytest.fixture(scope="session")
def variant_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(parse_config(VARIANT, origin="variant.yaml"), tmp_path_factory.mktemp("cdk.out"))


# One mirror for an organization: sharing with the organization and two accounts, two replica regions.
ORG = "o-a1b2c3d4e5"
ROOT = "r-a1b2"  # the organization's root: the StackSet's target
ACCOUNTS = ["111122223333", "444455556666"]
SHARED = {
    "images": [
        {"source": "python", "tags": ["3.13-slim"]},
        {"source": "gcr.io/distroless/base-debian12", "tags": ["nonroot"]},
        {"source": "moby/buildkit", "tags": ["buildx-stable-1"], "target": "mirror/docker.io/moby/buildkit"},
    ],
    "pull_through_cache": [{"upstream": "docker-hub"}, {"upstream": "quay"}],
    "sharing": {"organization_id": ORG, "accounts": ACCOUNTS, "stack_set": {"targets": [ROOT]}},
    "replication": {"regions": ["eu-west-1", "us-west-2"]},
}


@pytest.fixture(scope="session")
def shared_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(parse_config(SHARED, origin="shared.yaml"), tmp_path_factory.mktemp("cdk.out"))
