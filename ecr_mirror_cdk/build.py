"""A ready-made CodeBuild project: logins built in, every pull from the mirror, cache in ECR, pipeline-ready.

Importable by other CDK apps: `MirrorBuildProject(self, "Build", config=..., registry_uri=..., docker_hub_secret=...)`.
The buildspec is in buildspec.py; the mirror setup it fetches is the setup package beside it, as the one-file
archive setup_archive.py builds (an S3 asset).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from aws_cdk import Acknowledgment, Annotations, Duration, RemovalPolicy, Stack, Stage, Validations
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from . import constants
from .buildspec import BuildSpecOptions, build_spec
from .config import Config
from .contract import direct_repositories, mirror_map
from .reference import parse
from .setup_archive import write_setup_archive
from .sharing import CACHE_FILL_ACTIONS, PULL_ACTIONS

BUILD_IMAGE = codebuild.LinuxBuildImage.STANDARD_7_0
COMPUTE_TYPE = codebuild.ComputeType.MEDIUM
BUILD_TIMEOUT = Duration.minutes(60)
LOG_RETENTION = logs.RetentionDays.THREE_MONTHS
CACHE_TAG_COUNT = 200  # registry cache manifests kept (one per repository, platform set and branch)
CACHE_UNTAGGED_DAYS = 3  # cache manifests a newer cache export replaced
DEFAULT_PLATFORMS = "linux/amd64"
DEFAULT_CONTAINER_NAME = "app"
# Docker Hub names, as `docker buildx create` and `docker run` would use them: dockerd pulls both through the
# mirror endpoint, which serves them from their direct copies (mirror.yaml), so they need no Docker Hub token.
BUILDKIT_IMAGE = "moby/buildkit:buildx-stable-1"
BINFMT_IMAGE = "tonistiigi/binfmt:latest"

# A pull through a cache rule creates the repository and imports the image on first use.
PULL_THROUGH_ACTIONS = [*PULL_ACTIONS, *CACHE_FILL_ACTIONS]
_PUSH = [*PULL_ACTIONS, "ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload"]


def setup_folder(scope: Construct) -> Path:
    """A folder in the app's output holding the setup archive at constants.SETUP_KEY: the file an asset uploads
    (here, adopt.py), and the folder stacks/stackset.py copies into its bucket, so the key stays where earlier
    setup lines fetch it. Written once per synth from the package's sources (the same bytes every time), however
    many constructs ask for it."""
    return _written_setup_folder(Path(cast(Stage, Stage.of(scope)).outdir) / "ecr-mirror-setup")


@functools.cache
def _written_setup_folder(folder: Path) -> Path:
    write_setup_archive(folder / constants.SETUP_KEY)
    return folder


class MirrorBuildProject(Construct):
    """Privileged CodeBuild project whose builds pull every image through the mirror and cache in ECR.

    Pipeline options: `push_repositories` (names, or prefixes as `team/*`) builds may push to besides
    `image_repository`, chosen per build with IMAGE_REPO_NAME; `source_buckets` the build reads (S3 sources,
    CodePipeline input artifacts); `artifact_buckets` it reads and writes (CodePipeline's artifact store);
    `kms_keys` that encrypt them when the bucket objects do not carry the key; `environment_image`, a
    `repository:tag` in the mirror registry to run builds on instead of CodeBuild's standard image (a custom image:
    the build starts dockerd itself when none answers, buildspec.DOCKERD_START).
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: Config, registry_uri: str,
                 docker_hub_secret: secretsmanager.ISecret, push_repositories: Sequence[str] = (),
                 source_buckets: Sequence[s3.IBucket] = (), artifact_buckets: Sequence[s3.IBucket] = (),
                 kms_keys: Sequence[kms.IKey] = (), environment_image: str | None = None) -> None:
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
        setup = s3_assets.Asset(self, "SetupMirror", path=str(setup_folder(self) / constants.SETUP_KEY))
        log_group = logs.LogGroup(self, "Logs", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY)

        creds = config.docker_hub_credentials
        use_ssm = bool(creds.ssm_username and creds.ssm_token)
        spec = build_spec(BuildSpecOptions(
            docker_hub_secret=docker_hub_secret.secret_arn,
            ssm_username=creds.ssm_username if use_ssm else None,
            ssm_token=creds.ssm_token if use_ssm else None,
            start_dockerd=environment_image is not None,  # CodeBuild starts dockerd in its own images only
        ))
        # Defaults a build may override (start-build --environment-variables-override, or the pipeline
        # action's environment_variables); IMAGE_TAG, DOCKERFILE, BUILD_ARGS and CACHE_BRANCH default in the buildspec.
        env = {
            "MIRROR_REGISTRY": registry_uri,
            "MIRROR_MAP": mirror_map(config),
            "MIRROR_SETUP_BUCKET": setup.s3_bucket_name,
            "MIRROR_SETUP_KEY": setup.s3_object_key,
            "BUILDKIT_IMAGE": BUILDKIT_IMAGE,
            "BINFMT_IMAGE": BINFMT_IMAGE,
            "IMAGE_REPO_NAME": self.image_repository.repository_name,
            "CACHE_REPO_NAME": self.cache_repository.repository_name,
            "CONTAINER_NAME": DEFAULT_CONTAINER_NAME,
            "PLATFORMS": DEFAULT_PLATFORMS,
            "CONTEXT_DIR": ".",
            "TAG_LATEST": "true",
        }
        build_image: codebuild.IBuildImage = BUILD_IMAGE
        if environment_image:
            # CodeBuild pulls an ECR image with the project's service role (image_pull_credentials_type SERVICE_ROLE).
            repository, _, tag = environment_image.partition(":")
            build_image = codebuild.LinuxBuildImage.from_ecr_repository(
                ecr.Repository.from_repository_name(self, "EnvironmentImage", repository), tag or "latest")
        self.project = codebuild.Project(
            self, "Project",
            description="Docker image builds that pull every image through the ECR mirror; registry cache in ECR",
            build_spec=codebuild.BuildSpec.from_object(spec),
            environment=codebuild.BuildEnvironment(
                build_image=build_image, compute_type=COMPUTE_TYPE, privileged=True,
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
        missing = build_images_not_mirrored(config)
        if missing:
            Annotations.of(self.project).add_warning_v2("@ecr-mirror/build-images", (
                f"{config.origin}: images: the build pulls {', '.join(ref for ref, _ in missing)}, which the mirror "
                "does not copy: builds take them through the docker-hub cache rule, which needs a Docker Hub "
                f"token, or from Docker Hub itself; add to images: {', '.join(entry for _, entry in missing)}"))
        role = self.project.role
        assert role is not None  # the project creates its own role
        self.role = role
        self._grant(config, setup, docker_hub_secret, use_ssm, push_repositories)
        for bucket in source_buckets:
            bucket.grant_read(role)
        for bucket in artifact_buckets:
            bucket.grant_read_write(role)
        for key in kms_keys:
            key.grant_encrypt_decrypt(role)
        self._acknowledge(config, use_ssm, push_repositories, [*source_buckets, *artifact_buckets], kms_keys)
        if environment_image:
            Validations.of(self.project).acknowledge(Acknowledgment(
                id="AwsSolutions-CB5",
                reason="The build image is one the platform team chose, from its own ECR mirror.",
            ))

    def _grant(self, config: Config, setup: s3_assets.Asset, secret: secretsmanager.ISecret, use_ssm: bool,
               push_repositories: Sequence[str]) -> None:
        stack = Stack.of(self)
        project = self.project

        def repo_arn(name: str) -> str:
            return stack.format_arn(service="ecr", resource="repository", resource_name=name)

        self.image_repository.grant_pull_push(project)
        self.cache_repository.grant_pull_push(project)
        if push_repositories:
            project.add_to_role_policy(iam.PolicyStatement(
                actions=_PUSH, resources=[repo_arn(name) for name in push_repositories]))
        # The one object the build fetches, not the whole asset bucket.
        project.add_to_role_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[setup.bucket.arn_for_objects(setup.s3_object_key)],
        ))
        direct = direct_repositories(config)
        if direct:
            project.add_to_role_policy(iam.PolicyStatement(actions=PULL_ACTIONS,
                                                           resources=[repo_arn(r) for r in direct]))
        if config.pull_through_cache:
            project.add_to_role_policy(iam.PolicyStatement(
                actions=PULL_THROUGH_ACTIONS,
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

    def _acknowledge(self, config: Config, use_ssm: bool, push_repositories: Sequence[str],
                     buckets: Sequence[s3.IBucket], keys: Sequence[kms.IKey]) -> None:
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
        for name in direct_repositories(config):
            if name.endswith("/*"):
                wildcards["Resource::" + arn.format("ecr", f"repository/{name}")] = (
                    "The mirror's direct copies, one repository per image listed in mirror.yaml, under its prefix.")
        for name in push_repositories:
            if name.endswith("*"):
                wildcards["Resource::" + arn.format("ecr", f"repository/{name}")] = (
                    f"Builds push to the repositories under {name!r}, chosen per build with IMAGE_REPO_NAME."
                )
        for bucket in buckets:
            wildcards[f"Resource::{nag_text(stack.resolve(bucket.bucket_arn))}/*"] = (
                "Source and artifact objects are named per build by CodeBuild and CodePipeline."
            )
        if buckets:
            for action in ("s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:DeleteObject*", "s3:Abort*"):
                wildcards[f"Action::{action}"] = "CDK's grant_read/grant_read_write on the source and artifact buckets."
        if keys or any(bucket.encryption_key for bucket in buckets):
            for action in ("kms:ReEncrypt*", "kms:GenerateDataKey*"):
                wildcards[f"Action::{action}"] = "CDK's key grant for the source and artifact buckets' KMS keys."
        if use_ssm:
            wildcards["Resource::" + arn.format("kms", "key/*")] = (
                "SecureString parameters under the aws/ssm key; kms:ViaService limits decryption to SSM."
            )
        Validations.of(self.project).acknowledge(Acknowledgment(
            id="AwsSolutions-CB3", reason="Privileged mode is required to run the Docker daemon for image builds.",
        ))
        for finding, reason in wildcards.items():
            Validations.of(self.role).acknowledge(Acknowledgment(id=f"AwsSolutions-IAM5[{finding}]", reason=reason))


def build_images_not_mirrored(config: Config) -> list[tuple[str, str]]:
    """The build's own images whose tag the config does not copy: (image, the mirror.yaml entry to add)."""
    missing = []
    for image in (BUILDKIT_IMAGE, BINFMT_IMAGE):
        ref = parse(image)
        tag = ref.tag or "latest"
        if not any(i.ref.name == ref.name and (tag in i.tags or bool(i.tag_regex and re.fullmatch(i.tag_regex, tag)))
                   for i in config.images):
            missing.append((image, f'- {{source: {ref.repository}, tags: ["{tag}"]}}'))
    return missing


def nag_text(value: object) -> str:
    """A resolved CloudFormation value as cdk-nag spells it in finding ids: `<Bucket.Arn>`, `<AWS::Partition>`."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "<" + ".".join(value["Fn::GetAtt"]) + ">"
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(nag_text(part) for part in parts)
    raise ValueError(f"cannot name {value!r} in a cdk-nag finding")
