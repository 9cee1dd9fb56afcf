"""Scheduled sync: EventBridge → planner Lambda → SQS (one message per image/tag) → copier Lambda."""

from __future__ import annotations

import json
from typing import Any, cast

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from ecr_mirror_cdk import constants
from ecr_mirror_cdk.config import Config
from lambdas.mirror import settings

from . import lambda_asset, regions


class MirrorSync(Construct):
    """The planner plans with HEADs only; the copier copies, a bounded number at a time."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: Config,
        spec_parameter_name: str,
        credential_secrets: dict[str, str],
    ) -> None:
        super().__init__(scope, id)
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=constants.DEAD_LETTER_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=constants.QUEUE_VISIBILITY_TIMEOUT,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=constants.MAX_RECEIVE_COUNT
            ),
        )

        # Scheduled runs the planner could not finish: Lambda's on-failure destination after its retries,
        # and EventBridge's dead-letter queue for events it could not deliver. Nothing consumes it.
        self.planner_failures = sqs.Queue(
            self,
            "PlannerFailures",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=constants.DEAD_LETTER_RETENTION,
        )
        Validations.of(self.planner_failures).acknowledge(
            Acknowledgment(
                id="AwsSolutions-SQS3",
                reason="This queue is itself a dead-letter store: the planner's on-failure destination and the "
                "schedule target's dead-letter queue; nothing consumes or retries from it.",
            )
        )

        code = lambda_asset.code()
        layer = lambda_.LayerVersion.from_layer_version_arn(
            self, "Powertools", regions.powertools_layer(self, config)
        )
        environment = {
            # Registry host -> secret the functions log in to it with (Config.credential_secrets()).
            settings.ENV_REGISTRY_CREDENTIALS: json.dumps(credential_secrets, separators=(",", ":"), sort_keys=True),
            # The planner fills the queue; the copier re-sends a throttled or unstarted task to it.
            settings.ENV_QUEUE_URL: self.queue.queue_url,
            "POWERTOOLS_SERVICE_NAME": settings.SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": settings.METRICS_NAMESPACE,
        }
        # The planner rewrites it when the set of pending changes changes; CloudFormation only creates it.
        self.state = ssm.StringParameter(
            self,
            "PlannerState",
            parameter_name=constants.PARAMETER_STATE,
            string_value="{}",
            description="When the mirror planner first saw each change not yet mirrored (for staleness)",
        )
        self.planner = self._function(
            "Planner",
            code=code,
            layer=layer,
            handler=constants.PLANNER_HANDLER,
            timeout=constants.PLANNER_TIMEOUT,
            memory_size=constants.PLANNER_MEMORY_MB,
            # Only the planner reads the spec; each queued message carries all the copier needs.
            environment={
                **environment,
                settings.ENV_SPEC_PARAMETER: spec_parameter_name,
                settings.ENV_STATE_PARAMETER: self.state.parameter_name,
            },
            description="Plans the mirror sync with HEAD requests and queues one message per image/tag",
            # Lambda's async invocation: two retries on error, then the event goes to the failure queue.
            # No reserved concurrency by default: Lambda keeps 100 units unreserved and a new account may
            # have 10, so reserving one fails the deploy there. Two overlapping runs are harmless: each
            # plans with HEADs only (free at Docker Hub), and a copy queued twice finds its tag already
            # moved and is skipped without a source request (sync.run_task). sync.planner_reserved_concurrency
            # (1) serializes runs where the quota allows.
            on_failure=destinations.SqsDestination(self.planner_failures),
            retry_attempts=constants.PLANNER_RETRY_ATTEMPTS,
            max_event_age=constants.PLANNER_MAX_EVENT_AGE,
            reserved_concurrent_executions=config.sync.planner_reserved_concurrency,
        )
        self.state.grant_read(self.planner)
        self.state.grant_write(self.planner)
        self.copier = self._function(
            "Copier",
            code=code,
            layer=layer,
            handler=constants.COPIER_HANDLER,
            timeout=constants.COPIER_TIMEOUT,
            memory_size=constants.COPIER_MEMORY_MB,
            environment=environment,
            description="Copies one image/tag per message into ECR",
        )
        self.copier.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=constants.COPIER_BATCH_SIZE,
                report_batch_item_failures=True,
                # Bounded so a large plan cannot stampede an upstream registry.
                max_concurrency=config.sync.max_concurrency,
            )
        )
        self.schedule = events.Rule(
            self,
            "Schedule",
            description="Runs the mirror planner",
            schedule=events.Schedule.expression(config.schedule),
            # EventBridge retries only failed deliveries (the function's own errors are Lambda's retries);
            # an event it gives up on is counted as FailedInvocations and kept in the failure queue.
            targets=[
                targets.LambdaFunction(
                    self.planner,
                    retry_attempts=2,
                    max_event_age=constants.PLANNER_MAX_EVENT_AGE,
                    dead_letter_queue=self.planner_failures,
                )
            ],
        )

    def _function(
        self,
        id: str,
        *,
        code: lambda_.Code,
        layer: lambda_.ILayerVersion,
        handler: str,
        timeout: Duration,
        memory_size: int,
        environment: dict[str, str],
        description: str,
        **options: Any,
    ) -> lambda_.Function:
        # An own role without AWSLambdaBasicExecutionRole: logs go only to this function's log group.
        role = iam.Role(self, f"{id}Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        log_group = logs.LogGroup(self, f"{id}Logs", retention=constants.LOG_RETENTION)
        log_group.grant_write(role)
        function = lambda_.Function(
            self,
            id,
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.ARM_64,
            code=code,
            handler=handler,
            layers=[layer],
            role=role,
            timeout=timeout,
            memory_size=memory_size,
            environment=environment,
            description=description,
            log_group=log_group,
            tracing=lambda_.Tracing.ACTIVE,
            **options,
        )
        # CDK makes a function with its own role depend on that role although `Role` already references it.
        cast(lambda_.CfnFunction, function.node.default_child).add_metadata(
            "cfn-lint", {"config": {"ignore_checks": ["W3005"]}}
        )
        Validations.of(function).acknowledge(
            Acknowledgment(
                id="AwsSolutions-L1",
                reason="Python 3.13 matches the public Powertools layer (python313-arm64) the functions use; "
                "move both together.",
            )
        )
        Validations.of(role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="X-Ray PutTraceSegments/PutTelemetryRecords and ecr:GetAuthorizationToken have no "
                "resource-level permissions; every other statement is scoped to a resource.",
            )
        )
        return function
