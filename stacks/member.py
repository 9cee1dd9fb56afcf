"""The contract in every member account of the organization: the template the StackSet (stacks/stackset.py) deploys.

In each account and region it reaches: the SSM parameters a build reads (`registry-uri`, `mirror-map`,
`setup-bucket`, `setup-key`; `home-registry-uri` in a replica region) and `pull-repository-arns`, which
`MirrorAdoption(self, "Mirror")` reads at deploy. Once per account, in the mirror's home region (IAM is global:
a named policy in every region's stack would collide), the customer-managed policy `EcrMirrorPull` that a
project's role attaches. Its own template, with no assets and no bootstrap rule: member accounts need not be
CDK-bootstrapped.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any, cast

from aws_cdk import (
    Acknowledgment,
    App,
    Aws,
    BootstraplessSynthesizer,
    CfnCondition,
    CfnParameter,
    Fn,
    Stack,
    Validations,
)
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

from ecr_mirror_cdk import constants
from ecr_mirror_cdk.build import PULL_THROUGH_ACTIONS, nag_text
from ecr_mirror_cdk.config import Config, ConfigError
from ecr_mirror_cdk.contract import mirror_map, pull_repositories, repository_arns
from ecr_mirror_cdk.sharing import longest

# IAM and AWS STS quotas: a managed policy holds at most 6,144 characters, white space not counted.
MAX_MANAGED_POLICY_CHARACTERS = 6_144
# The longest text each Ref of the member template can take, to size values at synth (S3 bucket names: 63).
_LONGEST_REFS = {"MirrorAccount": "123456789012", "MirrorHomeRegion": "ap-southeast-5", "MirrorSetupBucket": "b" * 63,
                 "AWS::URLSuffix": "amazonaws.com.cn"}
# The variables a build of another tool takes as PARAMETER_STORE (docs/adopt.md, "Projects in other tools").
BUILD_PARAMETERS = (constants.PARAMETER_REGISTRY_URI, constants.PARAMETER_MIRROR_MAP,
                    constants.PARAMETER_SETUP_BUCKET, constants.PARAMETER_SETUP_KEY)


class MemberStack(Stack):
    """The member-account template: parameters name the mirror's account, home region and setup bucket."""

    def __init__(self, scope: Construct, id: str, *, config: Config) -> None:
        super().__init__(scope, id, synthesizer=BootstraplessSynthesizer(), analytics_reporting=False,
                         description="ECR mirror contract for this account: SSM parameters and the EcrMirrorPull "
                                     "policy (StackSet of the mirror stack)")
        account = CfnParameter(self, "MirrorAccount", allowed_pattern=r"\d{12}",
                               description="Account of the ECR mirror").value_as_string
        home = CfnParameter(self, "MirrorHomeRegion", allowed_pattern=r"[a-z]{2,4}(-[a-z]+)+-\d{1,2}",
                            description="Region of the mirror stack (the replicas' home)").value_as_string
        bucket = CfnParameter(self, "MirrorSetupBucket", description="The mirror's bucket holding the setup module",
                              allowed_pattern=r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]").value_as_string
        is_home = CfnCondition(self, "IsHomeRegion", expression=Fn.condition_equals(Aws.REGION, home))

        self.origin = config.origin
        names = pull_repositories(mirror_map(config))
        here = repository_arns(self, names, [(account, Aws.REGION)])
        both = here + repository_arns(self, names, [(account, home)])
        self.policy = self._policy(config, names, account, home, bucket)
        cast(iam.CfnManagedPolicy, self.policy.node.default_child).cfn_options.condition = is_home
        self._parameter("RegistryUri", constants.PARAMETER_REGISTRY_URI,
                        f"{account}.dkr.ecr.{Aws.REGION}.{Aws.URL_SUFFIX}", "ECR registry host of the mirror here")
        self._parameter("HomeRegistryUri", constants.PARAMETER_HOME_REGISTRY_URI,
                        f"{account}.dkr.ecr.{home}.{Aws.URL_SUFFIX}",
                        "The mirror's home registry (in the home region, registry-uri itself), which serves "
                        "what replication has not brought yet")
        self._parameter("MirrorMap", constants.PARAMETER_MIRROR_MAP, mirror_map(config),
                        "JSON map setup_mirror.py reads: upstream host to cache prefix, source to ECR repository")
        # The home region's bucket in every region: the AWS CLI's `aws s3 cp` follows S3's redirect to the bucket's
        # region (botocore utils.S3RegionRedirectorv2: PermanentRedirect, AuthorizationHeaderMalformed).
        self._parameter("SetupBucket", constants.PARAMETER_SETUP_BUCKET, bucket,
                        "S3 bucket of the mirror's setup module (ecr_mirror_cdk/setup, as one runnable archive)")
        self._parameter("SetupKey", constants.PARAMETER_SETUP_KEY, constants.SETUP_KEY,
                        "S3 key of the mirror's setup module in the setup bucket")
        # A replica region pulls, and first fills, at home too (docs/organization.md, "Other regions").
        arns = Fn.condition_if(is_home.logical_id, Fn.join(",", here), Fn.join(",", both)).to_string()
        self._parameter("PullRepositoryArns", constants.PARAMETER_PULL_REPOSITORY_ARNS, arns,
                        "ECR repositories a build may pull from the mirror (a cache prefix creates its own)",
                        kind="StringList", size=self._size(Fn.join(",", both if config.replication_regions else here)))

    def _parameter(self, id: str, name: str, value: str, description: str, *, kind: str = "String",
                   size: int | None = None, condition: CfnCondition | None = None) -> None:
        # Standard always, in every account and region: a tier never changes with the config (SSM cannot move an
        # advanced parameter back; ecr_mirror_cdk/contract.py), and an advanced one would be billed once per stack
        # instance. Only the map and the pull ARNs grow, with images copied outside repositories.prefix, which
        # EcrMirrorPull's 6,144 characters cap at a similar count; past 4 KB synth stops here.
        size = self._size(value) if size is None else size
        if size > constants.STANDARD_PARAMETER_BYTES:
            raise ConfigError(f"{self.origin}: sharing.stack_set: the member accounts' SSM parameter {name} would "
                              f"reach {size} bytes, over a standard parameter's {constants.STANDARD_PARAMETER_BYTES}; "
                              "copy fewer images outside repositories.prefix (target) or replicate to fewer regions")
        parameter = ssm.CfnParameter(self, id, name=name, type=kind, value=value, description=description,
                                     tier="Standard")
        parameter.cfn_options.condition = condition

    def _size(self, value: str) -> int:
        return len(str(longest(self.resolve(value), _LONGEST_REFS)).encode())

    def _policy(self, config: Config, names: list[str], account: str, home: str, bucket: str) -> iam.ManagedPolicy:
        regions = [home, *config.replication_regions]
        repositories = repository_arns(self, names, [(account, region) for region in regions])
        parameters = [self.format_arn(service="ssm", region=region, resource="parameter",
                                      resource_name=name.lstrip("/"))
                      for region in regions for name in BUILD_PARAMETERS
                      + ((constants.PARAMETER_HOME_REGISTRY_URI,) if region != home else ())]
        document = iam.PolicyDocument(statements=[
            # Builds log in with `aws ecr get-login-password`; the action takes no resource.
            iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(sid="MirrorPull", actions=PULL_THROUGH_ACTIONS, resources=repositories),
            iam.PolicyStatement(sid="SetupModule", actions=["s3:GetObject"],
                                resources=[f"arn:{Aws.PARTITION}:s3:::{bucket}/{constants.SETUP_KEY}"]),
            # CodeBuild reads PARAMETER_STORE variables with the service role (ssm:GetParameters).
            iam.PolicyStatement(sid="MirrorParameters", actions=["ssm:GetParameters"], resources=parameters),
        ])
        size = len(json.dumps(longest(self.resolve(document), _LONGEST_REFS), separators=(",", ":")))
        if size > MAX_MANAGED_POLICY_CHARACTERS:
            raise ConfigError(f"{config.origin}: sharing.stack_set: the {constants.MEMBER_POLICY_NAME} policy would "
                              f"reach {size} characters, over IAM's {MAX_MANAGED_POLICY_CHARACTERS} for a managed "
                              "policy; mirror fewer images directly or replicate to fewer regions")
        policy = iam.ManagedPolicy(self, "Pull", managed_policy_name=constants.MEMBER_POLICY_NAME, document=document,
                                   description="Pull through the organization's ECR mirror: attach to a CodeBuild "
                                               "project's service role")
        cast(iam.CfnManagedPolicy, policy.node.default_child).override_logical_id(constants.MEMBER_POLICY_NAME)
        reasons = {"*": "ecr:GetAuthorizationToken has no resource-level permissions."}
        for arn in repositories:
            if arn.endswith("*"):
                reasons[nag_text(self.resolve(arn))] = (
                    "A pull through the mirror's cache rule creates the repository under its prefix on first pull; "
                    "the names are the images the build pulls.")
        for resource, reason in reasons.items():
            Validations.of(policy).acknowledge(Acknowledgment(id=f"AwsSolutions-IAM5[Resource::{resource}]",
                                                              reason=reason))
        return policy


def member_template(scope: Construct, config: Config) -> dict[str, Any]:
    """The member stack synthesized in an app of its own, with the context (feature flags) of `scope`'s app."""
    with tempfile.TemporaryDirectory() as outdir:  # never the CLI's cdk.out: this app is not deployed itself
        app = App(outdir=outdir, context=scope.node.get_all_context(), analytics_reporting=False)
        return checked_template(MemberStack(app, f"{constants.STACK_NAME}Member", config=config))


def checked_template(stack: Stack) -> dict[str, Any]:
    """The template of a stack alone in its app, synthesized with cdk-nag (an unacknowledged finding raises),
    without the construct-path metadata of that app, which is of no use in a member account."""
    app = cast(App, stack.node.root)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    template: dict[str, Any] = app.synth().get_stack_artifact(stack.artifact_id).template
    for resource in template["Resources"].values():
        resource.pop("Metadata", None)
    return template
