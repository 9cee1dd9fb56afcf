"""The mirror platform's one stack: composes the constructs and grants each role what it uses."""

from __future__ import annotations

from typing import Any

from aws_cdk import Annotations, CfnOutput, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from ecr_mirror_cdk import constants
from ecr_mirror_cdk.build import MirrorBuildProject
from ecr_mirror_cdk.config import Config
from ecr_mirror_cdk.contract import MirrorContract, mirror_map

from .credentials import DockerHubCredentials
from .observability import MirrorObservability
from .registry import MirrorRegistry
from .replication import check_regions, replication_configuration
from .stackset import OrganizationContract
from .sync import MirrorSync

NO_STACK_SET = "@ecr-mirror/no-stack-set"  # the warning's id: Annotations.acknowledge_warning silences it


class MirrorStack(Stack):
    def __init__(self, scope: Construct, id: str, *, config: Config, **kwargs: Any) -> None:
        super().__init__(scope, id, description=constants.DESCRIPTION, **kwargs)
        # Before any construct: a refused config leaves nothing in the cloud assembly (the build stages an asset).
        check_regions(self, config)
        credentials = DockerHubCredentials(self, "Credentials", credentials=config.docker_hub_credentials)
        secret = credentials.secret
        registry = MirrorRegistry(self, "Registry", config=config, docker_hub_secret=secret)
        build = MirrorBuildProject(self, "Build", config=config, registry_uri=registry.uri, docker_hub_secret=secret)
        registry.scan_on_push(config=config, also=[build.image_repository.repository_name])
        if config.replication_regions:
            replication_configuration(registry, "Replication", config=config)
        contract = MirrorContract(self, "Contract", config=config, registry_uri=registry.uri, project=build.project)
        if config.sharing is not None and config.sharing.stack_set is not None:
            OrganizationContract(self, "Organization", config=config)  # the contract in every member account
        elif config.sharing is not None and config.sharing.organization_id:
            Annotations.of(self).add_warning_v2(NO_STACK_SET, (
                f"{config.origin}: sharing: the organization {config.sharing.organization_id} may pull, but without "
                "sharing.stack_set its accounts get no contract: give their projects the outputs RegistryUri and "
                "MirrorMap (MirrorAdoption(registry_uri=..., mirror_map=...))"))
        sync = MirrorSync(
            self,
            "Sync",
            config=config,
            spec_parameter_name=contract.spec.parameter_name,
            credential_secrets=config.credential_secrets(),
        )
        observability = MirrorObservability(
            self,
            "Observability",
            config=config,
            dead_letter_queue=sync.dead_letter_queue,
            queue=sync.queue,
            planner=sync.planner,
            copier=sync.copier,
            schedule=sync.schedule,
        )

        registry.grant_read(sync.planner)
        registry.grant_mirror(sync.copier)
        # The copier re-sends a throttled or unstarted task as a new message (its receive count restarts).
        for function in (sync.planner, sync.copier):
            sync.queue.grant_send_messages(function)
        iam.Grant.add_to_principal(
            grantee=sync.planner, actions=["ssm:GetParameter"], resource_arns=[contract.spec.parameter_arn]
        )
        # Direct copies log in to each upstream with its secret; Docker Hub's may be created above.
        others = set(config.credential_secrets().values()) - {config.docker_hub_credentials.secret_name}
        # Imported secrets add no resource, so an index is a safe id (names like a/b and a-b would collide).
        upstream_secrets = [secret] + [
            secretsmanager.Secret.from_secret_name_v2(self, f"UpstreamSecret{i}", name)
            for i, name in enumerate(sorted(others))
        ]
        for function in (sync.planner, sync.copier):
            for upstream_secret in upstream_secrets:
                upstream_secret.grant_read(function)
        # Only the planner checks signatures (`verify`): it reads the stored public keys, nothing else does.
        for i, key in enumerate(config.verify_keys()):
            if key.kind == "ssm":
                iam.Grant.add_to_principal(grantee=sync.planner, actions=["ssm:GetParameter"], resource_arns=[
                    self.format_arn(service="ssm", resource="parameter", resource_name=key.value.lstrip("/"))])
            elif key.kind == "secretsmanager":
                secretsmanager.Secret.from_secret_name_v2(self, f"VerifyKey{i}", key.value).grant_read(sync.planner)

        CfnOutput(self, "RegistryUri", value=registry.uri, description="ECR registry host of the mirror")
        CfnOutput(self, "MirrorMap", value=mirror_map(config),
                  description="mirror_map for MirrorAdoption (ecr_mirror_cdk) in another account, with RegistryUri")
        CfnOutput(
            self,
            "CodeBuildProjectName",
            value=build.project.project_name,
            description="CodeBuild project that builds with bases from the mirror",
        )
        CfnOutput(
            self,
            "AlarmTopicArn",
            value=observability.topic.topic_arn,
            description="Subscribe to this SNS topic for the mirror's alarms",
        )
        CfnOutput(
            self,
            "ImageRepositoryUri",
            value=build.image_repository.repository_uri,
            description="ECR repository the CodeBuild project pushes built images to (kept on stack deletion)",
        )
        CfnOutput(
            self,
            "DashboardName",
            value=observability.dashboard.dashboard_name,
            description="CloudWatch dashboard of the mirror",
        )
        CfnOutput(
            self,
            "DeadLetterQueueUrl",
            value=sync.dead_letter_queue.queue_url,
            description="Copies that failed three times; redrive to the queue once the cause is fixed",
        )
        CfnOutput(
            self,
            "PlannerFailureQueueUrl",
            value=sync.planner_failures.queue_url,
            description="Scheduled planner runs that failed after their retries (the events, for inspection)",
        )
        CfnOutput(self, "PlannerFunctionName", value=sync.planner.function_name,
                  description="The planner Lambda; make verify invokes it once and reads its plan summary")
