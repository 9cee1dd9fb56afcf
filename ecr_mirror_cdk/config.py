"""The typed model of `mirror.yaml`, shared by the CDK app (at synth), the CLI and the planner Lambda (at run time):
what a validated config is, and its JSON form. `config_parse` reads one (the section checks are in `config_fields`,
`config_images` and `config_deployment`).

Pure Python on purpose: the Lambda runtime has no YAML or pydantic, so the stack stores the validated config as JSON
in SSM and the planner runs it through the same `parse_config`.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .reference import DOCKER_HUB, Reference, parse
from .signing_key import KeySource, key_source

DEFAULT_SCHEDULE = "rate(10 minutes)"
DEFAULT_SECRET = "ecr-pullthroughcache/docker-hub"
# Copy the artifacts that refer to each image (signatures, SBOMs, attestations): on unless mirror.yaml says
# `referrers: false`, so a team that verifies signatures keeps them (docs/signatures.md says why and what it costs).
DEFAULT_REFERRERS = True
SECRET_PREFIX = "ecr-pullthroughcache/"


@dataclass(frozen=True)
class Upstream:
    """An upstream registry that ECR pull-through cache supports."""

    url: str  # what AWS::ECR::PullThroughCacheRule calls UpstreamRegistryUrl
    registry: str  # the host image references name
    needs_credentials: bool


UPSTREAMS: dict[str, Upstream] = {
    "docker-hub": Upstream("registry-1.docker.io", DOCKER_HUB, True),
    "ecr-public": Upstream("public.ecr.aws", "public.ecr.aws", False),
    "quay": Upstream("quay.io", "quay.io", False),
    "k8s": Upstream("registry.k8s.io", "registry.k8s.io", False),
    "github-container-registry": Upstream("ghcr.io", "ghcr.io", True),
    "gitlab-container-registry": Upstream("registry.gitlab.com", "registry.gitlab.com", True),
}
DEFAULT_UPSTREAMS = ("docker-hub", "ecr-public", "quay", "k8s")
# AWS::CloudFormation::StackSet CallAs: SELF in the management account, else a registered delegated administrator.
STACK_SET_CALL_AS = ("DELEGATED_ADMIN", "SELF")

# ECR's tag mutability settings that refuse to move a tag (botocore's ECR model, ImageTagMutability).
IMMUTABLE_SETTINGS = ("IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION")


class ConfigError(ValueError):
    """Bad input in the config file; the message names file, entry and field."""


@dataclass(frozen=True)
class CacheRule:
    upstream: str
    prefix: str
    credentials_secret: str | None = None

    @property
    def registry(self) -> str:
        return UPSTREAMS[self.upstream].registry

    @property
    def upstream_url(self) -> str:
        return UPSTREAMS[self.upstream].url


@dataclass(frozen=True)
class Verify:
    """A tag moves only to a digest this key signed (docs/verify-signatures.md)."""

    cosign_public_key: str  # an inline PEM, ssm:<parameter name> or secretsmanager:<secret name>

    @property
    def source(self) -> KeySource:
        return key_source(self.cosign_public_key)


@dataclass(frozen=True)
class Image:
    source: str
    tags: tuple[str, ...] = ()
    tag_regex: str | None = None
    platforms: tuple[str, ...] = ()
    target: str | None = None
    # Filled by parse_config: the repository the image is copied into (`target`, or mirror/<host>/<path>).
    repository: str = ""
    referrers: bool = DEFAULT_REFERRERS  # the image's own `referrers`, else the top-level one
    # Filled by parse_config: the image's own `verify`, else the top-level one; None: tags move unchecked.
    verify: Verify | None = None

    @property
    def ref(self) -> Reference:
        return parse(self.source)


@dataclass(frozen=True)
class Credentials:
    secret_name: str = DEFAULT_SECRET
    existing_secret: bool = False
    ssm_username: str | None = None
    ssm_token: str | None = None


@dataclass(frozen=True)
class Sync:
    quota_reserve: int = 20
    max_concurrency: int = 4
    # None: no reserved concurrency (an account may have only 10 units, and Lambda keeps 100 unreserved).
    planner_reserved_concurrency: int | None = None


@dataclass(frozen=True)
class Repositories:
    prefix: str = "mirror"
    tag_mutability: str = "MUTABLE"
    untagged_expiry_days: int = 7


@dataclass(frozen=True)
class StackSet:
    """Where the organization's StackSet puts the contract: the root id (every account) or OU ids."""

    targets: tuple[str, ...]
    call_as: str = STACK_SET_CALL_AS[0]


@dataclass(frozen=True)
class Sharing:
    """Who else may pull from the mirror: an AWS Organization, single accounts, or both."""

    organization_id: str | None = None
    accounts: tuple[str, ...] = ()
    stack_set: StackSet | None = None  # with organization_id only: the contract in every member account


@dataclass(frozen=True)
class Config:
    images: tuple[Image, ...]
    schedule: str = DEFAULT_SCHEDULE
    pull_through_cache: tuple[CacheRule, ...] = ()
    docker_hub_credentials: Credentials = field(default_factory=Credentials)
    sync: Sync = field(default_factory=Sync)
    repositories: Repositories = field(default_factory=Repositories)
    sharing: Sharing | None = None
    replication_regions: tuple[str, ...] = ()
    # Upstream registry host -> Secrets Manager secret (JSON `username`, `accessToken`) the mirror logs in with.
    registry_credentials: tuple[tuple[str, str], ...] = ()
    referrers: bool = DEFAULT_REFERRERS  # the default of every image's `referrers`
    verify: Verify | None = None  # the default of every image that does not say `verify` itself
    origin: str = field(default="mirror.yaml", compare=False)  # the file, for messages

    def rule_for(self, registry: str) -> CacheRule | None:
        return next((r for r in self.pull_through_cache if r.registry == registry), None)

    def credential_secrets(self) -> dict[str, str]:
        """Every upstream registry the mirror logs in to -> its secret: Docker Hub's, each cache rule's and
        `registry_credentials`. The copier uses them for direct copies, the cache rules for their upstream."""
        secrets = {DOCKER_HUB: self.docker_hub_credentials.secret_name}
        secrets.update((rule.registry, rule.credentials_secret) for rule in self.pull_through_cache
                       if rule.credentials_secret)
        secrets.update(self.registry_credentials)
        return secrets

    def verify_keys(self) -> list[KeySource]:
        """The distinct keys images are held to, in config order (the planner reads the stored ones)."""
        keys = [image.verify.source for image in self.images if image.verify is not None]
        return list(dict.fromkeys(keys))

    def to_spec(self) -> str:
        """`to_json`, gzipped and base64-encoded behind SPEC_PREFIX: what the stack stores in SSM for the planner.
        Compressed so that a few hundred images fit SSM's 8 KB (the same names and tags repeat); `parse_spec`."""
        packed = base64.b64encode(gzip.compress(self.to_json().encode(), mtime=0)).decode()
        return SPEC_PREFIX + packed

    def to_json(self) -> str:
        """The validated config, in the YAML file's own shape, as compact JSON."""
        creds = self.docker_hub_credentials
        data: dict[str, Any] = {
            "images": [
                {
                    k: v
                    for k, v in (
                        ("source", i.source),
                        ("tags", list(i.tags)),
                        ("tag_regex", i.tag_regex),
                        ("platforms", list(i.platforms)),
                        ("target", i.target),
                        # Only where it differs from the top-level default; `false` opts out of it.
                        ("verify", None if i.verify == self.verify else
                         {"cosign_public_key": i.verify.cosign_public_key} if i.verify else False),
                    )
                    if v or v is False
                } | ({"referrers": i.referrers} if i.referrers != self.referrers else {})
                for i in self.images
            ],
            "schedule": self.schedule,
            "pull_through_cache": [
                {k: v for k, v in asdict(r).items() if v is not None} for r in self.pull_through_cache
            ],
            "docker_hub_credentials": {"secret_name": creds.secret_name, "existing_secret": creds.existing_secret},
            "sync": asdict(self.sync),
            "repositories": asdict(self.repositories),
        }
        if self.sharing is not None:
            stack_set = self.sharing.stack_set
            data["sharing"] = {k: v for k, v in (
                ("organization_id", self.sharing.organization_id), ("accounts", list(self.sharing.accounts)),
                ("stack_set", stack_set and {"targets": list(stack_set.targets), "call_as": stack_set.call_as}),
            ) if v}
        if self.replication_regions:
            data["replication"] = {"regions": list(self.replication_regions)}
        if self.registry_credentials:
            data["registry_credentials"] = dict(self.registry_credentials)
        if self.referrers != DEFAULT_REFERRERS:
            data["referrers"] = self.referrers
        if self.verify is not None:
            data["verify"] = {"cosign_public_key": self.verify.cosign_public_key}
        if creds.ssm_username and creds.ssm_token:
            data["docker_hub_credentials"]["ssm_parameters"] = {
                "username": creds.ssm_username,
                "token": creds.ssm_token,
            }
        return json.dumps(data, separators=(",", ":"), sort_keys=True)


def partition(region: str) -> str:
    """The AWS partition a region name belongs to (ARN format, AWS General Reference)."""
    for start, name in (("cn-", "aws-cn"), ("us-gov-", "aws-us-gov"), ("us-isob-", "aws-iso-b"),
                        ("us-iso-", "aws-iso"), ("eusc-", "aws-eusc")):
        if region.startswith(start):
            return name
    return "aws"


SPEC_PREFIX = "gzip+base64:"


def default_repository(ref: Reference, prefix: str) -> str:
    """`mirror/<registry host>/<path>`; a port becomes `-PORT` (ECR names have no colon)."""
    host = ref.registry.lower().strip("[]").replace(":", "-")
    return f"{prefix}/{host}/{ref.repository}"
