"""The organization's accounts get the mirror's contract with no hand-over: a service-managed StackSet.

It deploys stacks/member.py's template to every account under `sharing.stack_set.targets` (the organization's
root id for all of them, or OU ids), in the mirror's region and each replica region, and to each account that
joins later (AutoDeployment; one that leaves loses the stack: RetainStacksOnAccountRemoval false). The mirror's
own account is left out (DeploymentTargets DIFFERENCE): its stack already holds the contract parameters, which
a stack instance there would collide with. StackSets never deploy to the management account ("DeploymentTargets",
CloudFormation API reference). Accounts in `sharing.accounts` get it when they are under the targets: a
service-managed StackSet reaches only accounts of the organization, and adding accounts outside the OUs
(AccountFilterType UNION) "is not supported for create operations when using StackSet as a resource"
(AWS::CloudFormation::StackSet DeploymentTargets).

The setup module builds fetch is copied into the mirror's own bucket, which the organization may read.
"""

from __future__ import annotations

import json
import re
from typing import cast

from aws_cdk import Acknowledgment, Aws, CfnStackSet, DefaultStackSynthesizer, RemovalPolicy, Stack, Validations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from ecr_mirror_cdk import constants
from ecr_mirror_cdk.build import nag_text, setup_folder
from ecr_mirror_cdk.config import Config, ConfigError, Sharing, StackSet
from ecr_mirror_cdk.sharing import statements

from .member import member_template

# AWS::CloudFormation::StackSet TemplateBody: "a maximum length of 51,200 bytes".
MAX_TEMPLATE_BODY_BYTES = 51_200
# A member account that fails (a service control policy denying IAM or SSM, a replica region not enabled there, an
# EcrMirrorPull it already has) must stay a failed stack instance, never fail the mirror stack. The StackSet
# resource's handler fails on any operation status but SUCCEEDED, RUNNING or QUEUED ("Stack set operation [..] was
# unexpectedly stopped or failed": aws-cloudformation-resource-providers-cloudformation at 0d362a3,
# aws-cloudformation-stackset BaseHandlerStd.isStackSetOperationDone), and an operation is FAILED when "the number
# of failed stacks within a Region exceeds the failure tolerance" (CloudFormation API reference,
# StackSetOperation.Status). 100 percent of the accounts is never exceeded: the operation succeeds, and `make
# verify` lists the failed instances (stacks/verify/members.py). With nothing ever stopped, a staggered rollout
# would only make the mirror stack wait longer: all accounts (MaxConcurrentPercentage 100) and regions at once.
# SOFT_FAILURE_TOLERANCE "decouples FailureToleranceCount from the actual concurrency ... regardless of the number
# of failures" (StackSetOperationPreferences.ConcurrencyMode); STRICT would lower the concurrency as accounts fail.
OPERATION_PREFERENCES = CfnStackSet.OperationPreferencesProperty(
    region_concurrency_type="PARALLEL", concurrency_mode="SOFT_FAILURE_TOLERANCE",
    max_concurrent_percentage=100, failure_tolerance_percentage=100)
# BucketDeployment runs `aws s3 sync` in a Lambda (the AWS CLI layer, no Docker); one small file needs little.
DEPLOYMENT_MEMORY_MB = 256


class OrganizationContract(Construct):
    """The setup bucket (read by the organization) and the StackSet that gives each member account the contract."""

    def __init__(self, scope: Construct, id: str, *, config: Config) -> None:
        super().__init__(scope, id)
        sharing = cast(Sharing, config.sharing)
        stack_set = cast(StackSet, sharing.stack_set)
        self.bucket = self._setup_bucket(sharing)
        # Another account's role reads the object with its own policy (EcrMirrorPull) and this bucket policy.
        self.deployment = s3deploy.BucketDeployment(
            self, "SetupModule",
            sources=[s3deploy.Source.asset(str(setup_folder(self)))],  # the archive at SETUP_KEY
            destination_bucket=self.bucket,
            retain_on_delete=False,  # the bucket goes with the stack, so its one object does too
            memory_limit=DEPLOYMENT_MEMORY_MB,
            content_type="application/zip",  # a zip archive Python runs as a script
            log_group=logs.LogGroup(self, "SetupModuleLogs", retention=logs.RetentionDays.ONE_MONTH,
                                    removal_policy=RemovalPolicy.DESTROY),
        )
        self._acknowledge_deployment()

        body = json.dumps(member_template(self, config), separators=(",", ":"), sort_keys=True)
        if len(body.encode()) > MAX_TEMPLATE_BODY_BYTES:
            raise ConfigError(f"{config.origin}: sharing.stack_set: the member template is {len(body.encode())} "
                              f"bytes, over a StackSet's {MAX_TEMPLATE_BODY_BYTES} (TemplateBody); mirror fewer "
                              "images directly or replicate to fewer regions")
        parameters = {"MirrorAccount": Aws.ACCOUNT_ID, "MirrorHomeRegion": Aws.REGION,
                      "MirrorSetupBucket": self.bucket.bucket_name}
        self.stack_set = CfnStackSet(
            self, "StackSet",
            stack_set_name=constants.STACK_SET_NAME,
            description="ECR mirror contract in each account: SSM parameters /ecr-mirror/*, the EcrMirrorPull policy",
            permission_model="SERVICE_MANAGED",
            call_as=stack_set.call_as,
            auto_deployment=CfnStackSet.AutoDeploymentProperty(enabled=True, retain_stacks_on_account_removal=False),
            capabilities=["CAPABILITY_NAMED_IAM"],  # the policy has a name, EcrMirrorPull
            # Queues an operation that conflicts (an account joining during an update) instead of failing it.
            managed_execution={"Active": True},
            operation_preferences=OPERATION_PREFERENCES,
            parameters=[CfnStackSet.ParameterProperty(parameter_key=key, parameter_value=value)
                        for key, value in parameters.items()],
            stack_instances_group=[CfnStackSet.StackInstancesProperty(
                deployment_targets=CfnStackSet.DeploymentTargetsProperty(
                    organizational_unit_ids=list(stack_set.targets), accounts=[Aws.ACCOUNT_ID],
                    account_filter_type="DIFFERENCE"),
                regions=[Aws.REGION, *config.replication_regions],
            )],
            template_body=body,
        )
        self.stack_set.node.add_dependency(self.deployment)  # members never name an object not there yet

    def _setup_bucket(self, sharing: Sharing) -> s3.Bucket:
        bucket = s3.Bucket(
            self, "SetupBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,  # SSE-S3: readable across accounts with no key policy
            enforce_ssl=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        # The accounts' roots, and any principal of the organization: never `*` without aws:PrincipalOrgID.
        for statement in statements(sharing, "SetupModuleFor", ["s3:GetObject"],
                                    [bucket.arn_for_objects(constants.SETUP_KEY)]):
            bucket.add_to_resource_policy(statement)
        Validations.of(bucket).acknowledge(Acknowledgment(
            id="AwsSolutions-S1",
            reason="The bucket holds one object, the mirror's public-source setup script, written only by this "
                   "stack; CloudTrail records its reads, so an access log bucket would add nothing.",
        ))
        return bucket

    def _acknowledge_deployment(self) -> None:
        """CDK's BucketDeployment: its handler is a singleton at stack level, with CDK's own grants."""
        stack = Stack.of(self)
        handler = next(child for child in stack.node.children
                       if child.node.id.startswith("Custom::CDKBucketDeployment"))
        # The bootstrap bucket as cdk-nag names it (DefaultStackSynthesizer's name, its ${...} as <...>).
        qualifier = getattr(stack.synthesizer, "bootstrap_qualifier", None) or DefaultStackSynthesizer.DEFAULT_QUALIFIER
        assets = DefaultStackSynthesizer.DEFAULT_FILE_ASSETS_BUCKET_NAME.replace("${Qualifier}", qualifier)
        assets = re.sub(r"\$\{([^}]+)\}", r"<\1>", assets)
        setup_bucket = nag_text(stack.resolve(self.bucket.bucket_arn))
        reasons = {
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{assets}/*]":
                "CDK's BucketDeployment reads its source asset from the bootstrap bucket; asset keys are hashes.",
            f"AwsSolutions-IAM5[Resource::{setup_bucket}/*]":
                "CDK's BucketDeployment syncs the setup bucket, which holds only the setup module.",
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSLambdaBasicExecutionRole]": "CDK's BucketDeployment handler writes its logs with the basic role.",
            "AwsSolutions-IAM5[Action::s3:GetObject*]": "CDK's grant_read on the asset bucket to copy the module.",
            "AwsSolutions-IAM5[Action::s3:GetBucket*]": "CDK's grant_read on the asset bucket to copy the module.",
            "AwsSolutions-IAM5[Action::s3:List*]": "CDK's grant_read_write: aws s3 sync lists both buckets.",
            "AwsSolutions-IAM5[Action::s3:DeleteObject*]": "CDK's grant_read_write: sync prunes the setup bucket.",
            "AwsSolutions-IAM5[Action::s3:Abort*]": "CDK's grant_read_write: sync may abort a multipart upload.",
            "AwsSolutions-L1": "CDK pins BucketDeployment's handler runtime; it is updated with aws-cdk-lib.",
        }
        for finding, reason in reasons.items():
            Validations.of(handler).acknowledge(Acknowledgment(id=finding, reason=reason))
