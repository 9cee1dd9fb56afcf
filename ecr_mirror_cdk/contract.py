"""SSM parameters that publish the mirror's contract to consumers and its spec to the Lambdas."""

from __future__ import annotations

import json
from collections.abc import Iterable

from aws_cdk import Stack
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from . import constants
from .config import Config, ConfigError, default_repository

# Longest registry host ECR has (12-digit account, longest region, China suffix): sizes tokens at synth.
_LONGEST_URI = "123456789012.dkr.ecr.ap-southeast-5.amazonaws.com.cn"
_LONGEST_REPOSITORY_ARN = "arn:aws-us-gov:ecr:ap-southeast-5:123456789012:repository/"
# Each parameter's tier is fixed by what it holds, never by its size today: SSM "can't revert an advanced
# parameter to a standard parameter" (PutParameter, Tier; the error is "You can't downgrade a parameter from the
# advanced-parameter tier"), and CloudFormation updates Tier in place, so a config that shrank back under 4 KB
# would fail its update. Here, what grows with mirror.yaml is advanced (8 KB; $0.05 a month each, README "Cost"):
# the spec (every image), the map (image hosts and targets) and the pull ARNs (each target elsewhere). The rest is
# small by design, so standard: ARNs, names, one host, and the cache prefixes (one rule per upstream of
# config.UPSTREAMS at most, prefixes of 30 characters: under 300 bytes). Member accounts keep theirs standard
# (stacks/member.py). A value over its tier's limit stops synth with one line.
ADVANCED_PARAMETERS = frozenset({constants.PARAMETER_SPEC, constants.PARAMETER_MIRROR_MAP,
                                 constants.PARAMETER_PULL_REPOSITORY_ARNS})


def prefixes_json(config: Config) -> str:
    """Upstream registry host → ECR repository prefix that caches it."""
    return json.dumps(
        {rule.registry: rule.prefix for rule in config.pull_through_cache}, separators=(",", ":"), sort_keys=True
    )


def mirror_map(config: Config) -> str:
    """What setup_mirror.py and adopted projects need, as compact JSON, whatever the number of images:
    `prefixes` (registry host -> cache-rule prefix), `mirror_prefix` and `mirror_hosts` (an image of those hosts
    is at `<mirror_prefix>/<host>/<path>` when mirror.yaml lists it) and `repositories` (source -> the `target`
    of each image copied elsewhere). A build asks for `<mirror_prefix>/…` first, then the cache prefix."""
    base = config.repositories.prefix
    prefixes = {rule.registry: rule.prefix for rule in config.pull_through_cache}
    hosts = sorted({image.ref.registry for image in config.images
                    if image.repository == default_repository(image.ref, base)})
    repositories = {image.ref.name: image.repository for image in config.images
                    if image.repository != default_repository(image.ref, base)}
    data: dict[str, object] = {"prefixes": prefixes, "repositories": repositories}
    if hosts:
        data |= {"mirror_prefix": base, "mirror_hosts": hosts}
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def direct_repositories(config: Config) -> list[str]:
    """Repository names of the direct copies, for IAM: `<repositories.prefix>/*` for every image at its default
    location (so a policy stays small for any number of images), and each `target` elsewhere."""
    base = config.repositories.prefix
    names = {image.repository for image in config.images}
    default = {image.repository for image in config.images if image.repository == default_repository(image.ref, base)}
    return ([f"{base}/*"] if default else []) + sorted(names - default)


def pull_repositories(mirror: str) -> list[str]:
    """Repository names a build pulls (`<prefix>/*` per cache rule and for `mirror_prefix`, each other
    direct copy), from a mirror_map JSON."""
    parsed = json.loads(mirror)
    wildcards = set(parsed["prefixes"].values()) | ({parsed["mirror_prefix"]} if parsed.get("mirror_hosts") else set())
    return [f"{prefix}/*" for prefix in sorted(wildcards)] + sorted(set(parsed["repositories"].values()))


def repository_arns(scope: Construct, names: list[str], registries: Iterable[tuple[str, str]]) -> list[str]:
    """The ARNs of `names` (pull_repositories) in each registry, given as (account, region); tokens allowed."""
    stack = Stack.of(scope)
    return [stack.format_arn(service="ecr", account=account, region=region, resource="repository", resource_name=name)
            for account, region in registries for name in names]


class MirrorContract(Construct):
    """Publishes where things are; the spec parameter is what the planner and copier read at run time."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: Config,
        registry_uri: str,
        project: codebuild.IProject | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.spec = self._parameter(
            "Spec", constants.PARAMETER_SPEC, config.to_spec(),
            "Validated mirror.yaml as gzipped, base64-encoded JSON, read by the planner"
        )
        self._parameter(
            "RegistryUri", constants.PARAMETER_REGISTRY_URI, registry_uri, "ECR registry host", size=len(_LONGEST_URI)
        )
        # As in every member account: MirrorAdoption reads it in any region, and here it is the registry itself.
        self._parameter("HomeRegistryUri", constants.PARAMETER_HOME_REGISTRY_URI, registry_uri,
                        "The mirror's home registry (here: registry-uri itself)", size=len(_LONGEST_URI))
        self._parameter(
            "Prefixes",
            constants.PARAMETER_PREFIXES,
            prefixes_json(config),
            "JSON map: upstream registry host to ECR pull-through cache prefix",
        )
        self._parameter(
            "MirrorMap",
            constants.PARAMETER_MIRROR_MAP,
            mirror_map(config),
            "JSON map setup_mirror.py reads: cache prefixes, the mirror prefix and hosts, other direct copies",
        )
        stack = Stack.of(self)
        names = pull_repositories(mirror_map(config))
        longest = sum(len(_LONGEST_REPOSITORY_ARN) + len(name) + 1 for name in names)  # the ARNs hold tokens
        ssm.StringListParameter(
            self,
            "PullRepositoryArns",
            parameter_name=constants.PARAMETER_PULL_REPOSITORY_ARNS,
            string_list_value=[
                stack.format_arn(service="ecr", resource="repository", resource_name=name) for name in names
            ],
            description="ECR repositories a build may pull from the mirror (a cache prefix creates its own)",
            tier=parameter_tier(constants.PARAMETER_PULL_REPOSITORY_ARNS, longest),
        )
        if project is not None:
            self._parameter(
                "ProjectName",
                constants.PARAMETER_PROJECT_NAME,
                project.project_name,
                "CodeBuild project that builds images from the mirror",
                size=255,
            )
            self._parameter(
                "ProjectArn",
                constants.PARAMETER_PROJECT_ARN,
                project.project_arn,
                "ARN of the CodeBuild project",
                size=2048,
            )
            if project.role is not None:  # pipelines defined elsewhere grant their artifact bucket to this role
                self._parameter(
                    "RoleArn",
                    constants.PARAMETER_ROLE_ARN,
                    project.role.role_arn,
                    "ARN of the CodeBuild project's service role",
                    size=2048,
                )

    def _parameter(
        self, id: str, name: str, value: str, description: str, size: int | None = None
    ) -> ssm.StringParameter:
        # `size` stands in for values that hold deploy-time tokens (registry host, project name).
        tier = parameter_tier(name, len(value.encode()) if size is None else size)
        return ssm.StringParameter(
            self, id, parameter_name=name, string_value=value, description=description, tier=tier
        )


def parameter_tier(name: str, size: int) -> ssm.ParameterTier:
    """The parameter's fixed tier (ADVANCED_PARAMETERS); synth stops with one line if `size` is over its limit."""
    advanced = name in ADVANCED_PARAMETERS
    limit = constants.ADVANCED_PARAMETER_BYTES if advanced else constants.STANDARD_PARAMETER_BYTES
    if size > limit:
        raise ConfigError(
            f"SSM parameter {name}: {size} bytes, over the {limit}-byte limit of its tier; "
            "mirror fewer images per stack or shorten tag lists with tag_regex"
        )
    return ssm.ParameterTier.ADVANCED if advanced else ssm.ParameterTier.STANDARD
