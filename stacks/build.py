"""A ready-made CodeBuild project: logins built in, Dockerfiles unchanged, bases from the mirror, cache in ECR.

Importable by other CDK apps: `MirrorBuildProject(self, "Build", config=..., registry_uri=..., docker_hub_secret=...)`.
The buildspec is in stacks/buildspec.py; the redirect module it fetches is codebuild/redirect.py (an S3 asset).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from lambdas.mirror.config import Config
from lambdas.mirror.reference import parse

from .buildspec import BuildSpecOptions, build_spec

REDIRECT_MODULE = Path(__file__).resolve().parent.parent / "codebuild" / "redirect.py"
BUILD_IMAGE = codebuild.LinuxBuildImage.STANDARD_7_0
COMPUTE_TYPE = codebuild.ComputeType.MEDIUM
BUILD_TIMEOUT = Duration.minutes(60)
LOG_RETENTION = logs.RetentionDays.THREE_MONTHS
CACHE_TAG_COUNT = 50  # registry cache manifests kept in the cache repository (one per image/branch tag)
CACHE_UNTAGGED_DAYS = 3  # cache manifests a newer cache export replaced
DEFAULT_PLATFORMS = "linux/amd64"
DEFAULT_CONTAINER_NAME = "app"
BUILDKIT = "moby/buildkit:buildx-stable-1"  # what `docker buildx create` would pull from Docker Hub

_PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
# A pull through a cache rule creates the repository and imports the image on first use.
_PULL_THROUGH = [*_PULL, "ecr:BatchImportUpstreamImage", "ecr:CreateRepository"]


def buildkit_image(config: Config, registry_uri: str) -> str:
    """moby/buildkit from the mirror (its cache rule or its direct copy); Docker Hub only if neither covers it."""
    ref = parse(BUILDKIT)
    rule = config.rule_for(ref.registry)
    image = next((i for i in config.images if i.ref.name == ref.name and i.via is None), None)
    if rule is not None:
        return f"{registry_uri}/{rule.prefix}/{ref.repository}:{ref.tag}"
    if image is not None:
        return f"{registry_uri}/{image.repository}:{ref.tag}"
    return BUILDKIT


def mirror_map(config: Config) -> str:
    """What the redirect module needs, as compact JSON: registry -> cache-rule prefix, source repo -> ECR repo.

    Directly mirrored repositories carry their tags (and tag regex): only those tags exist in ECR.
    """
    prefixes = {rule.registry: rule.prefix for rule in config.pull_through_cache}
    repositories = {
        image.ref.name: {"repository": image.repository, "tags": list(image.tags), "tag_regex": image.tag_regex}
        for image in config.images
        if image.via is None
    }
    return json.dumps({"prefixes": prefixes, "repositories": repositories}, separators=(",", ":"), sort_keys=True)


class MirrorBuildProject(Construct):
    """Privileged CodeBuild project whose buildspec logs in, redirects bases to the mirror and caches in ECR."""

    def __init__(self, scope: Construct, construct_id: str, *, config: Config, registry_uri: str,
                 docker_hub_secret: secretsmanager.ISecret) -> None:
        super().__init__(scope, construct_id)
        self.image_repository = ecr.Repository(
            self, "ImageRepository",
            image_scan_on_push=True,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[ecr.LifecycleRule(
                description="untagged images a moved tag left behind",
                tag_status=ecr.TagStatus.UNTAGGED,
                max_image_age=Duration.days(config.repositories.untagged_expiry_days),
            )],
        )
        self.cache_repository = ecr.Repository(
            self, "CacheRepository",
            removal_policy=RemovalPolicy.DESTROY,
            empty_on_delete=True,  # cache only: every entry can be rebuilt
            lifecycle_rules=[
                ecr.LifecycleRule(
                    rule_priority=1, description="cache manifests a newer export replaced",
                    tag_status=ecr.TagStatus.UNTAGGED, max_image_age=Duration.days(CACHE_UNTAGGED_DAYS),
                ),
                ecr.LifecycleRule(
                    rule_priority=2, description="oldest cache tags beyond the newest ones",
                    tag_status=ecr.TagStatus.ANY, max_image_count=CACHE_TAG_COUNT,
                ),
            ],
        )
        redirect = s3_assets.Asset(self, "RedirectModule", path=str(REDIRECT_MODULE))
        log_group = logs.LogGroup(self, "Logs", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY)

        creds = config.docker_hub_credentials
        use_ssm = bool(creds.ssm_username and creds.ssm_token)
        spec = build_spec(BuildSpecOptions(
            docker_hub_secret=docker_hub_secret.secret_arn,
            ssm_username=creds.ssm_username if use_ssm else None,
            ssm_token=creds.ssm_token if use_ssm else None,
        ))
        # Defaults a build may override (start-build --environment-variables-override, or the pipeline
        # action's environment_variables); IMAGE_TAG, DOCKERFILE, BUILD_ARGS and CACHE_TAG default in the buildspec.
        env = {
            "MIRROR_REGISTRY": registry_uri,
            "MIRROR_MAP": mirror_map(config),
            "BUILDKIT_IMAGE": buildkit_image(config, registry_uri),
            "IMAGE_REPO_NAME": self.image_repository.repository_name,
            "CACHE_REPO_NAME": self.cache_repository.repository_name,
            "REDIRECT_BUCKET": redirect.s3_bucket_name,
            "REDIRECT_KEY": redirect.s3_object_key,
            "CONTAINER_NAME": DEFAULT_CONTAINER_NAME,
            "PLATFORMS": DEFAULT_PLATFORMS,
            "CONTEXT_DIR": ".",
            "TAG_LATEST": "true",
        }
        self.project = codebuild.Project(
            self, "Project",
            description="Docker image builds with bases from the ECR mirror and a registry cache in ECR",
            build_spec=codebuild.BuildSpec.from_object(spec),
            environment=codebuild.BuildEnvironment(
                build_image=BUILD_IMAGE, compute_type=COMPUTE_TYPE, privileged=True,
            ),
            environment_variables={k: codebuild.BuildEnvironmentVariable(value=v) for k, v in env.items()},
            logging=codebuild.LoggingOptions(cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=log_group)),
            timeout=BUILD_TIMEOUT,
        )
        # The AWS-managed S3 key, set on the L1: its key policy already lets S3 use it for the account, and
        # `encryption_key=` would grant kms:* on key/* (flag @aws-cdk/aws-kms:applyImportedAliasPermissionsToPrincipal).
        cast(codebuild.CfnProject, self.project.node.default_child).encryption_key = Stack.of(self).format_arn(
            service="kms", resource="alias", resource_name="aws/s3"
        )
        self._grant(config, redirect, docker_hub_secret, use_ssm)
        self._acknowledge(config, use_ssm)

    def _grant(self, config: Config, redirect: s3_assets.Asset, secret: secretsmanager.ISecret, use_ssm: bool) -> None:
        stack = Stack.of(self)
        project = self.project

        def repo_arn(name: str) -> str:
            return stack.format_arn(service="ecr", resource="repository", resource_name=name)

        self.image_repository.grant_pull_push(project)
        self.cache_repository.grant_pull_push(project)
        # The one object the build fetches, not the whole asset bucket.
        project.add_to_role_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[redirect.bucket.arn_for_objects(redirect.s3_object_key)],
        ))
        direct = sorted({image.repository for image in config.images if image.via is None})
        if direct:
            project.add_to_role_policy(iam.PolicyStatement(actions=_PULL, resources=[repo_arn(r) for r in direct]))
        if config.pull_through_cache:
            project.add_to_role_policy(iam.PolicyStatement(
                actions=_PULL_THROUGH,
                resources=[repo_arn(f"{rule.prefix}/*") for rule in config.pull_through_cache],
            ))
        creds = config.docker_hub_credentials
        if use_ssm:
            project.add_to_role_policy(iam.PolicyStatement(
                actions=["ssm:GetParameters"],
                resources=[stack.format_arn(service="ssm", resource="parameter", resource_name=name.lstrip("/"))
                           for name in (creds.ssm_username or "", creds.ssm_token or "")],
            ))
            # SecureStrings under the default aws/ssm key decrypt through SSM only.
            project.add_to_role_policy(iam.PolicyStatement(
                actions=["kms:Decrypt"],
                resources=[stack.format_arn(service="kms", resource="key", resource_name="*")],
                conditions={"StringEquals": {"kms:ViaService": f"ssm.{stack.region}.{stack.url_suffix}"}},
            ))
        else:
            secret.grant_read(project)

    def _acknowledge(self, config: Config, use_ssm: bool) -> None:
        stack = Stack.of(self)
        project_id = stack.resolve(stack.get_logical_id(self.project.node.default_child))  # type: ignore[arg-type]
        arn = "arn:<AWS::Partition>:{}:<AWS::Region>:<AWS::AccountId>:{}"
        wildcards = {
            "Resource::*": "ecr:GetAuthorizationToken has no resource-level permissions.",
            "Resource::" + arn.format("logs", f"log-group:/aws/codebuild/<{project_id}>:*"):
                "CodeBuild's default log group grant: one log stream per build.",
            "Resource::" + arn.format("codebuild", f"report-group/<{project_id}>-*"):
                "CodeBuild's default report group grant: report groups are named after the project.",
        }
        for rule in config.pull_through_cache:
            wildcards["Resource::" + arn.format("ecr", f"repository/{rule.prefix}/*")] = (
                f"Pull-through cache rule {rule.prefix!r} creates repositories under its prefix on first pull; "
                "their names are the images Dockerfiles name."
            )
        if use_ssm:
            wildcards["Resource::" + arn.format("kms", "key/*")] = (
                "SecureString parameters under the aws/ssm key; kms:ViaService limits decryption to SSM."
            )
        Validations.of(self.project).acknowledge(Acknowledgment(
            id="AwsSolutions-CB3", reason="Privileged mode is required to run the Docker daemon for image builds.",
        ))
        role = self.project.role
        assert role is not None  # the project creates its own role
        for finding, reason in wildcards.items():
            Validations.of(role).acknowledge(Acknowledgment(id=f"AwsSolutions-IAM5[{finding}]", reason=reason))
