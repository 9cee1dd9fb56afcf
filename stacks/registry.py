"""ECR: a repository per directly-mirrored image, pull-through cache rules and their creation templates."""

from __future__ import annotations

import json
from typing import cast

from aws_cdk import Acknowledgment, Duration, Fn, RemovalPolicy, Stack, Validations
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from lambdas.mirror.config import Config

from . import sharing

# What reading a repository takes (the planner compares digests; pulls need the layer URLs too).
READ_ACTIONS = ["ecr:DescribeImages", "ecr:ListImages", "ecr:BatchGetImage"]
PULL_ACTIONS = [*READ_ACTIONS, "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer"]
PUSH_ACTIONS = ["ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage"]
# The copier moves a cached tag to the digest it just warmed (ECR would take up to 24 h): a manifest
# PUT only, since every blob and child manifest arrived through the cache; no layer uploads.
CACHE_TAG_ACTIONS = ["ecr:PutImage"]
# ECR: with tag immutability "Amazon ECR may not be able to update the cached images", and the
# copier could not move a tag either; so cache repositories are MUTABLE whatever the config says.
CACHE_TAG_MUTABILITY = "MUTABLE"


def _construct_id(name: str) -> str:
    # Construct ids cannot hold "/"; the repository name keeps ids stable when images are reordered.
    return name.replace("/", "--")


def mirrored_repository(scope: Construct, name: str, config: Config) -> ecr.Repository:
    """A repository the stack creates for a directly mirrored image (also in each replica region)."""
    settings = config.repositories
    repository = ecr.Repository(
        scope,
        _construct_id(name),
        repository_name=name,
        image_scan_on_push=True,
        encryption=ecr.RepositoryEncryption.AES_256,
        image_tag_mutability=ecr.TagMutability(settings.tag_mutability),
        lifecycle_rules=[
            ecr.LifecycleRule(
                description="Expire images a moved tag left behind",
                tag_status=ecr.TagStatus.UNTAGGED,
                max_image_age=Duration.days(settings.untagged_expiry_days),
            )
        ],
        # Deleting the stack must not delete images that builds depend on; a failed first create
        # deletes it, or the retry would fail on the fixed name ("already exists").
        removal_policy=RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE,
    )
    # ECR's default is AES256 too; stated so the template shows it (the L2 omits the default).
    cast(ecr.CfnRepository, repository.node.default_child).add_property_override(
        "EncryptionConfiguration.EncryptionType", "AES256"
    )
    if config.sharing is not None:
        for statement in sharing.pull_statements(scope, config.sharing, config.origin):
            repository.add_to_resource_policy(statement)
        sharing.acknowledge_organization(repository, config.sharing)
    return repository


def creation_template(scope: Construct, id: str, *, prefix: str, applied_for: str, description: str,
                      config: Config) -> ecr.CfnRepositoryCreationTemplate:
    """Settings for repositories ECR creates under `prefix` (a cache's first pull, or replication)."""
    # Without a template, repositories ECR creates get its defaults: no lifecycle policy, no repository policy.
    # A template has no scanning setting; `scan_on_push` covers that.
    template = ecr.CfnRepositoryCreationTemplate(
        scope,
        id,
        prefix=prefix,
        applied_for=[applied_for],
        description=description,
        encryption_configuration=ecr.CfnRepositoryCreationTemplate.EncryptionConfigurationProperty(
            encryption_type="AES256"
        ),
        image_tag_mutability=CACHE_TAG_MUTABILITY,
        lifecycle_policy=_lifecycle_policy(config.repositories.untagged_expiry_days),
        repository_policy=(None if config.sharing is None
                           else sharing.pull_policy_text(scope, config.sharing, config.origin)),
    )
    # Stated (Delete) although it is the default: `cdk import` adopts only resources with a DeletionPolicy,
    # and an account may already hold a rule or template with this prefix (README "Deploy").
    template.apply_removal_policy(RemovalPolicy.DESTROY)
    return template


def _lifecycle_policy(days: int) -> str:
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": "Expire images a moved tag left behind",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": days,
                    },
                    "action": {"type": "expire"},
                }
            ]
        },
        separators=(",", ":"),
    )


class MirrorRegistry(Construct):
    """Where images land: repositories we create and repositories ECR creates through a cache rule."""

    def __init__(self, scope: Construct, id: str, *, config: Config, docker_hub_secret: secretsmanager.ISecret) -> None:
        super().__init__(scope, id)
        self.uri = Fn.sub("${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}")
        self.prefixes = [rule.prefix for rule in config.pull_through_cache]
        self.repositories = [mirrored_repository(self, image.repository, config)
                             for image in config.images if image.via is None]
        for rule in config.pull_through_cache:
            credential_arn = None
            if rule.credentials_secret == config.docker_hub_credentials.secret_name:
                credential_arn = docker_hub_secret.secret_arn
            elif rule.credentials_secret is not None:
                credential_arn = secretsmanager.Secret.from_secret_name_v2(
                    self, f"{rule.upstream}-secret", rule.credentials_secret
                ).secret_arn
            rule_resource = ecr.CfnPullThroughCacheRule(
                self,
                f"{rule.upstream}-rule",
                ecr_repository_prefix=rule.prefix,
                upstream_registry=rule.upstream,
                upstream_registry_url=rule.upstream_url,
                credential_arn=credential_arn,
            )
            rule_resource.apply_removal_policy(RemovalPolicy.DESTROY)  # stated for `cdk import`, as templates
            creation_template(self, f"{rule.upstream}-template", prefix=rule.prefix, applied_for="PULL_THROUGH_CACHE",
                              description=f"Repositories the {rule.upstream} pull-through cache creates", config=config)
        if config.sharing is not None and self.prefixes:
            sharing.registry_policy(self, "Policy", sharing=config.sharing, prefix_arns=self.prefix_arns(),
                                    origin=config.origin)

    def scan_on_push(self, *, also: list[str]) -> ecr.CfnRegistryScanningConfiguration:
        """Basic scan on push for every repository of the mirror: the cache prefixes (repositories the cache
        creates, which neither a creation template nor the pull sets up for scanning), the mirrored
        repositories and `also` (e.g. the build's image repository).

        This is the registry's one scanning configuration for the region: ECR sets every repository that
        matches no filter to manual scanning ("Filters to choose which repositories are scanned"), so the
        filters list every repository name this stack knows of.
        """
        names = [f"{prefix}/*" for prefix in self.prefixes]
        names += [repository.repository_name for repository in self.repositories] + also
        return ecr.CfnRegistryScanningConfiguration(
            self,
            "Scanning",
            scan_type="BASIC",
            rules=[
                ecr.CfnRegistryScanningConfiguration.ScanningRuleProperty(
                    scan_frequency="SCAN_ON_PUSH",
                    repository_filters=[
                        ecr.CfnRegistryScanningConfiguration.RepositoryFilterProperty(
                            filter=name, filter_type="WILDCARD"
                        )
                        for name in names
                    ],
                )
            ],
        )

    def prefix_arns(self) -> list[str]:
        """ARNs of every repository under the pull-through cache prefixes (created on first pull)."""
        stack = Stack.of(self)
        return [
            stack.format_arn(service="ecr", resource="repository", resource_name=f"{prefix}/*")
            for prefix in self.prefixes
        ]

    def repository_arns(self) -> list[str]:
        return [repo.repository_arn for repo in self.repositories]

    def grant_read(self, grantee: iam.IGrantable) -> None:
        """Compare digests in ECR: list and describe images, read manifests; mirrored and cached repos."""
        self._grant_login(grantee)
        self._grant(grantee, READ_ACTIONS, self.repository_arns() + self.prefix_arns())
        self._acknowledge_prefixes(grantee)

    def grant_mirror(self, grantee: iam.IGrantable) -> None:
        """Copy images: pull and push mirrored repos; pull (and so fill) the cache prefixes and move their tags."""
        self._grant_login(grantee)
        self._grant(grantee, PULL_ACTIONS + PUSH_ACTIONS, self.repository_arns())
        self._grant(grantee, PULL_ACTIONS + sharing.CACHE_FILL_ACTIONS + CACHE_TAG_ACTIONS, self.prefix_arns())
        self._acknowledge_prefixes(grantee)

    def _grant_login(self, grantee: iam.IGrantable) -> None:
        # The registry login token is the only account-wide ECR action; it has no resource-level form.
        iam.Grant.add_to_principal(grantee=grantee, actions=["ecr:GetAuthorizationToken"], resource_arns=["*"])

    def _grant(self, grantee: iam.IGrantable, actions: list[str], resources: list[str]) -> None:
        # A config may have no direct images or no cache rules, and IAM rejects a statement without resources.
        if resources:
            iam.Grant.add_to_principal(grantee=grantee, actions=actions, resource_arns=resources)

    def _acknowledge_prefixes(self, grantee: iam.IGrantable) -> None:
        principal = grantee.grant_principal
        if not isinstance(principal, Construct):
            return
        for prefix in self.prefixes:
            arn = f"arn:<AWS::Partition>:ecr:<AWS::Region>:<AWS::AccountId>:repository/{prefix}/*"
            Validations.of(principal).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions-IAM5[Resource::{arn}]",
                    reason=f"ECR creates repositories under the {prefix!r} pull-through cache prefix on first "
                    "pull, so their names are not known at deploy time; the grant is limited to that prefix.",
                )
            )
