"""ECR: pull-through cache rules, and the creation templates that give every repository ECR creates for the
mirror its settings: a cache's first pull, the copier's first push (create on push), replication.

No repository of the mirror is a stack resource, so any number of images fits CloudFormation's 500 resources:
the copier pushes into `mirror/<host>/<path>` (or a `target`), and ECR creates the repository on that first push
with the settings of the CREATE_ON_PUSH template of its prefix (botocore's ECR model, RCTAppliedFor; "Amazon ECR
now supports creating repositories on push", AWS What's New, 2025-12-19). Without a matching template a push to a
missing repository still fails: create on push is opt-in (ECR maintainers, aws/containers-roadmap#853). The
pushing principal needs ecr:CreateRepository on the new repository (ECR user guide, repository creation
templates, create on push), which `grant_mirror` gives the copier. Without a customRoleArn "Amazon ECR will use
the service-linked role for the repository creation template" (botocore's ECR model), AWSServiceRoleForECRTemplate;
a custom role, which the deploying principal would pass (iam:PassRole), is needed only for a template with
resource tags or a KMS key (user guide, "Creating a repository creation template"): these templates have neither.
"""

from __future__ import annotations

import json

from aws_cdk import Acknowledgment, ArnFormat, Fn, RemovalPolicy, Stack, Validations
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import custom_resources as cr
from constructs import Construct

from ecr_mirror_cdk import sharing
from ecr_mirror_cdk.config import Config, ConfigError
from ecr_mirror_cdk.contract import direct_repositories, repository_arns

# The planner compares digests with manifest HEADs and GETs through the registry API (ecr:BatchGetImage);
# copies also read blobs, check which the destination has, and mount from other mirrored repositories
# (ECR user guide, "Blob mounting": mounting "need[s] ecr:GetDownloadUrlForLayer" on the source repository).
READ_ACTIONS = ["ecr:BatchGetImage"]
PULL_ACTIONS = [*READ_ACTIONS, "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer"]
PUSH_ACTIONS = ["ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage"]
# Create on push: the principal whose push creates the repository needs ecr:CreateRepository on it.
CREATE_ACTIONS = ["ecr:CreateRepository"]
# Every repository ECR creates for the mirror is MUTABLE: ECR "may not be able to update the cached images" with
# immutable tags ("Considerations for using pull through cache"), and the copier moves the tags of direct copies
# (ecr_mirror_cdk/config_deployment.py refuses IMMUTABLE).
TAG_MUTABILITY = "MUTABLE"
# botocore's ECR model: ScanningRepositoryFilterList "max": 100 (one SCAN_ON_PUSH rule serves BASIC scanning).
MAX_SCAN_FILTERS = 100


def direct_prefixes(config: Config) -> list[str]:
    """Creation-template prefixes covering every direct copy: `repositories.prefix` when an image is copied under
    it, and the parent of each `target` elsewhere (a prefix "would apply to all repositories beginning with
    prod/", so the nearest one keeps the template off repositories that are not the mirror's). A prefix under
    another of the list is dropped: the shorter one's template already covers it."""
    base = config.repositories.prefix
    names = [image.repository for image in config.images]
    found = {base} if any(name.startswith(f"{base}/") for name in names) else set()
    found |= {name.rsplit("/", 1)[0] for name in names if not name.startswith(f"{base}/")}
    return sorted(p for p in found if not any(p.startswith(f"{other}/") for other in found))


def template_id(prefix: str, purpose: str) -> str:
    # Construct ids cannot hold "/"; the prefix keeps ids stable when images are reordered.
    return f"{prefix.replace('/', '--')}-{purpose}-template"


def creation_template(scope: Construct, id: str, *, prefix: str, applied_for: str, description: str,
                      config: Config) -> ecr.CfnRepositoryCreationTemplate:
    """Settings for repositories ECR creates under `prefix`: a cache's first pull (PULL_THROUGH_CACHE), the
    copier's first push (CREATE_ON_PUSH) or replication (REPLICATION)."""
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
        image_tag_mutability=TAG_MUTABILITY,
        lifecycle_policy=_lifecycle_policy(config.repositories.untagged_expiry_days),
        repository_policy=(None if config.sharing is None
                           else sharing.pull_policy_text(scope, config.sharing, config.origin)),
    )
    # Stated (Delete) although it is the default: `cdk import` adopts only resources with a DeletionPolicy,
    # and an account may already hold a rule or template with this prefix (docs/deploy.md). Deleting a
    # template leaves the repositories it created as they are.
    template.apply_removal_policy(RemovalPolicy.DESTROY)
    return template


def direct_templates(scope: Construct, config: Config, applied_for: str) -> list[ecr.CfnRepositoryCreationTemplate]:
    """A template per `direct_prefixes`: the repositories of direct copies, created on push or by replication."""
    how = "the copier's first push" if applied_for == "CREATE_ON_PUSH" else "replication"
    return [creation_template(scope, template_id(prefix, applied_for.lower().replace("_", "-")), prefix=prefix,
                              applied_for=applied_for, config=config,
                              description=f"Mirrored images under {prefix}/, created by {how}")
            for prefix in direct_prefixes(config)]


def complete_secret_arn(scope: Construct, id: str, name: str) -> str:
    """The complete ARN (with Secrets Manager's 6-character suffix) of a secret the stack did not create, read
    at deploy time with DescribeSecret: a cache rule's CredentialArn is "The ARN of the Secrets Manager secret"
    (ECR API reference, CreatePullThroughCacheRule), and a name-only ARN lacks the suffix."""
    stack = Stack.of(scope)
    lookup = cr.AwsCustomResource(
        scope, id,
        on_update=cr.AwsSdkCall(service="SecretsManager", action="describeSecret", parameters={"SecretId": name},
                                physical_resource_id=cr.PhysicalResourceId.of(name), output_paths=["ARN"]),
        policy=cr.AwsCustomResourcePolicy.from_sdk_calls(resources=[stack.format_arn(
            service="secretsmanager", resource="secret", resource_name=f"{name}-??????",
            arn_format=ArnFormat.COLON_RESOURCE_NAME)]),
        install_latest_aws_sdk=False,
    )
    Validations.of(lookup).acknowledge(Acknowledgment(
        id=f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:"
           f"secret:{name}-??????]",
        reason="Secrets Manager appends 6 random characters to a secret's ARN; the name is fixed."))
    _acknowledge_lookup_function(stack)
    return lookup.get_response_field("ARN")


def _acknowledge_lookup_function(stack: Stack) -> None:
    # CDK's one function behind every AwsCustomResource of the stack (its fixed construct id).
    function = stack.node.try_find_child("AWS679f53fac002430cb0da5b7982bd2287")
    if function is None:
        return
    Validations.of(function).acknowledge(
        Acknowledgment(id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                          "AWSLambdaBasicExecutionRole]",
                       reason="CDK's AwsCustomResource function: log writing only."),
        Acknowledgment(id="AwsSolutions-L1", reason="CDK's AwsCustomResource function; its runtime is CDK's choice."),
    )


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
    """Where images land: repositories ECR creates through a cache rule or on the copier's first push."""

    def __init__(self, scope: Construct, id: str, *, config: Config, docker_hub_secret: secretsmanager.ISecret) -> None:
        super().__init__(scope, id)
        self.config = config
        self.uri = Fn.sub("${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}")
        self.prefixes = [rule.prefix for rule in config.pull_through_cache]
        self.templates = direct_templates(self, config, "CREATE_ON_PUSH")
        for rule in config.pull_through_cache:
            credential_arn = None
            if rule.credentials_secret == config.docker_hub_credentials.secret_name and \
                    docker_hub_secret.secret_full_arn is not None:
                credential_arn = docker_hub_secret.secret_full_arn  # the stack's own secret
            elif rule.credentials_secret is not None:
                credential_arn = complete_secret_arn(self, f"{rule.upstream}-secret", rule.credentials_secret)
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

    def scan_on_push(self, *, config: Config, also: list[str]) -> ecr.CfnRegistryScanningConfiguration:
        """Basic scan on push for every repository of the mirror (`scanning_filters`) and `also` (e.g. the build's
        image repository).

        This is the registry's one scanning configuration for the region: ECR sets every repository that
        matches no filter to manual scanning ("Filters to choose which repositories are scanned").
        """
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
                        for name in scanning_filters(config, extra=len(also)) + also
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
        """The direct copies, `<prefix>/*` for those at their default location (contract.direct_repositories)."""
        stack = Stack.of(self)
        return repository_arns(self, direct_repositories(self.config), [(stack.account, stack.region)])

    def grant_read(self, grantee: iam.IGrantable) -> None:
        """Compare digests: read manifests of the mirrored repositories."""
        self._grant_login(grantee)
        self._grant(grantee, READ_ACTIONS, self.repository_arns())
        self._acknowledge_prefix(grantee)

    def grant_mirror(self, grantee: iam.IGrantable) -> None:
        """Copy images: pull and push the mirrored repositories (never a cache rule's), which the first push
        creates."""
        self._grant_login(grantee)
        self._grant(grantee, PULL_ACTIONS + PUSH_ACTIONS + CREATE_ACTIONS, self.repository_arns())
        self._acknowledge_prefix(grantee)

    def _acknowledge_prefix(self, grantee: iam.IGrantable) -> None:
        principal = grantee.grant_principal
        names = [name for name in direct_repositories(self.config) if name.endswith("/*")]
        if not isinstance(principal, Construct) or not names:
            return
        arn = f"arn:<AWS::Partition>:ecr:<AWS::Region>:<AWS::AccountId>:repository/{names[0]}"
        Validations.of(principal).acknowledge(Acknowledgment(
            id=f"AwsSolutions-IAM5[Resource::{arn}]",
            reason="The mirror's direct copies: one repository per image mirror.yaml lists, all under this prefix, "
            "created by the first push; one wildcard keeps the policy within IAM's size limit for any number of "
            "images."))

    def _grant_login(self, grantee: iam.IGrantable) -> None:
        # The registry login token is the only account-wide ECR action; it has no resource-level form.
        iam.Grant.add_to_principal(grantee=grantee, actions=["ecr:GetAuthorizationToken"], resource_arns=["*"])

    def _grant(self, grantee: iam.IGrantable, actions: list[str], resources: list[str]) -> None:
        # A config may have no images yet (only cache rules), and IAM rejects a statement without resources.
        if resources:
            iam.Grant.add_to_principal(grantee=grantee, actions=actions, resource_arns=resources)


def scanning_filters(config: Config, *, extra: int = 0) -> list[str]:
    """Wildcard filters covering every cache prefix and every mirrored repository, within ECR's 100 per rule
    (`extra` more are added by the caller).

    ECR: "Filters with wildcards (*) match on a repository name where the wildcard replaces zero or more
    characters" (user guide, "Filters to choose which repositories are scanned"). One `<prefix>/*` covers every
    image under `repositories.prefix`; each repository elsewhere (a `target`) gets its own name, or, when those
    would not fit, one `<first component>/*` per group. A config that still cannot fit stops synth in one line.
    """
    filters = [f"{rule.prefix}/*" for rule in config.pull_through_cache]
    base = config.repositories.prefix
    names = [image.repository for image in config.images]
    if any(name.startswith(f"{base}/") for name in names):
        filters.append(f"{base}/*")
    others = list(dict.fromkeys(name for name in names if not name.startswith(f"{base}/")))
    room = MAX_SCAN_FILTERS - extra - len(filters)
    if len(others) > room:
        others = list(dict.fromkeys(f"{name.split('/')[0]}/*" if "/" in name else name for name in others))
    if len(others) > room:
        raise ConfigError(
            f"{config.origin}: images: {len(others)} targets outside repositories.prefix {base!r} need "
            f"{len(others)} scanning filters and {MAX_SCAN_FILTERS - room} more are taken; ECR allows "
            f"{MAX_SCAN_FILTERS} per rule: give more targets a common first path component, or drop their target")
    return filters + others
