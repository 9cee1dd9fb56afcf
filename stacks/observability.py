"""Alarms on what needs a person (stuck messages, failing copier or planner, a schedule that cannot
invoke, Docker Hub quota, and where an image has `verify`, a tag held for want of a signature), the
encrypted topic they publish to, and a dashboard."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from ecr_mirror_cdk import constants
from ecr_mirror_cdk.config import Config
from lambdas.mirror import settings


def mirror_metric(name: str, statistic: str = "Sum") -> cloudwatch.Metric:
    """A metric the engine publishes with Powertools EMF (dimension `service`)."""
    return cloudwatch.Metric(
        namespace=settings.METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": settings.SERVICE_NAME},
        statistic=statistic,
        period=constants.ALARM_PERIOD,
    )


def upstream_metric(name: str, upstream: str, statistic: str) -> cloudwatch.Metric:
    """A metric the planner publishes per upstream registry (dimensions `service`, `upstream`)."""
    return cloudwatch.Metric(
        namespace=settings.METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": settings.SERVICE_NAME, settings.DIMENSION_UPSTREAM: upstream},
        statistic=statistic,
        period=constants.ALARM_PERIOD,
        label=upstream,
    )


class MirrorObservability(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: Config,
        dead_letter_queue: sqs.IQueue,
        queue: sqs.IQueue,
        planner: lambda_.IFunction,
        copier: lambda_.IFunction,
        schedule: events.IRule,
    ) -> None:
        super().__init__(scope, id)
        # CloudWatch cannot publish to a topic under the AWS-managed SNS key, so the topic gets its own.
        key = kms.Key(self, "TopicKey", enable_key_rotation=True, description="Encrypts the mirror alarm topic")
        self.topic = sns.Topic(self, "Alarms", master_key=key, enforce_ssl=True, display_name="ECR mirror alarms")

        quota = mirror_metric(settings.METRIC_QUOTA_REMAINING, "Minimum").with_(period=constants.QUOTA_PERIOD)
        self.alarms = [
            self._alarm(
                "DeadLetters",
                "Copies failed three times and wait in the dead-letter queue "
                "(throttled or unstarted copies are re-queued, never counted)",
                dead_letter_queue.metric_approximate_number_of_messages_visible(
                    period=constants.ALARM_PERIOD, statistic="Maximum"
                ),
                threshold=0,
            ),
            self._alarm(
                "CopierErrors",
                "The copier Lambda failed (crash or timeout), not a single image",
                copier.metric_errors(period=constants.ALARM_PERIOD, statistic="Sum"),
                threshold=0,
            ),
            self._alarm(
                "PlannerErrors",
                "A planner run failed (crash or timeout); Lambda retries it twice, then keeps the event "
                "in the planner failure queue",
                planner.metric_errors(period=constants.ALARM_PERIOD, statistic="Sum"),
                threshold=0,
            ),
            self._alarm(
                "ScheduleFailedInvocations",
                "EventBridge could not invoke the planner after its retries; the event is in the planner "
                "failure queue",
                cloudwatch.Metric(
                    namespace="AWS/Events",
                    metric_name="FailedInvocations",
                    dimensions_map={"RuleName": schedule.rule_name},
                    statistic="Sum",
                    period=constants.ALARM_PERIOD,
                ),
                threshold=0,
            ),
            self._alarm(
                "DockerHubQuotaLow",
                "Docker Hub pulls left in the window fell below the reserve kept for CI builds",
                quota,
                threshold=config.sync.quota_reserve,
                comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            ),
        ]
        verifying = any(image.verify is not None for image in config.images)
        if verifying:  # only where a tag can be held: an alarm on a metric nobody emits would cost for nothing
            self.alarms.append(self._alarm(
                "UnverifiedImages",
                "An upstream tag moved to a digest without a signature from its verify key; the mirror's tag "
                "stays where it was (the planner's log names the image, tag and digest)",
                mirror_metric(settings.METRIC_UNVERIFIED, "Maximum").with_(period=constants.QUOTA_PERIOD),
                threshold=0,
                # Emitted once per planner run, so most periods have no data: that keeps the state, and the
                # alarm clears when a run counts 0 ("ignore: the current alarm state is maintained", CloudWatch
                # user guide, "Configuring how CloudWatch alarms treat missing data").
                missing=cloudwatch.TreatMissingData.IGNORE,
            ))
        self._allow_cloudwatch(key)
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard")
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Images",
                left=[
                    mirror_metric(name)
                    for name in (
                        settings.METRIC_COPIED,
                        settings.METRIC_SKIPPED,
                        settings.METRIC_DEFERRED,
                        settings.METRIC_FAILED,
                        *((settings.METRIC_UNVERIFIED,) if verifying else ()),
                    )
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(title="Bytes copied", left=[mirror_metric(settings.METRIC_BYTES)], width=12),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Docker Hub pulls left",
                left=[quota],
                left_annotations=[cloudwatch.HorizontalAnnotation(value=config.sync.quota_reserve, label="reserve")],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Queue",
                left=[
                    queue.metric_approximate_number_of_messages_visible(),
                    dead_letter_queue.metric_approximate_number_of_messages_visible(),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Lambda errors",
                left=[planner.metric_errors(), copier.metric_errors()],
                width=8,
            ),
        )
        self.dashboard.add_widgets(*self._upstream_widgets(config))
        self.dashboard.add_widgets(*(cloudwatch.AlarmWidget(alarm=alarm, width=8) for alarm in self.alarms))

    def _alarm_name(self, id: str) -> str:
        # Named, so the topic and key policies can list the alarms' ARNs without a dependency cycle
        # (key policy -> alarm -> topic -> key); the stack name keeps two stacks in one region apart.
        return f"{Stack.of(self).stack_name}-{id}"

    def _allow_cloudwatch(self, key: kms.IKey) -> None:
        """The topic policy CDK writes for enforce_ssl replaces SNS's default one, which let the account's
        CloudWatch publish; so allow CloudWatch explicitly, only for these alarms in this account. The key
        needs the same: CloudWatch encrypts what it publishes to an SSE-KMS topic (SNS docs, "Key management":
        compatibility between event sources from AWS services and encrypted topics)."""
        stack = Stack.of(self)
        alarm_arns = [
            stack.format_arn(
                service="cloudwatch",
                resource="alarm",
                resource_name=self._alarm_name(alarm.node.id),
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            for alarm in self.alarms
        ]
        cloudwatch_only = {
            "StringEquals": {"aws:SourceAccount": stack.account},
            "ArnLike": {"aws:SourceArn": alarm_arns},
        }
        cloudwatch_principal = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowMirrorAlarmsToPublish",
                principals=[cloudwatch_principal],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions=cloudwatch_only,
            )
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowMirrorAlarmsToEncrypt",
                principals=[cloudwatch_principal],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions=cloudwatch_only,
            )
        )

    @staticmethod
    def _upstream_widgets(config: Config) -> list[cloudwatch.GraphWidget]:
        """Per upstream registry the config mirrors from: quota left, images deferred, staleness."""
        upstreams = sorted({image.ref.registry for image in config.images})
        panels = (
            ("Pulls left per upstream (ratelimit-remaining)", settings.METRIC_UPSTREAM_QUOTA, "Minimum"),
            ("Images deferred per upstream", settings.METRIC_UPSTREAM_DEFERRED, "Maximum"),
            ("Oldest change not yet mirrored, seconds", settings.METRIC_UPSTREAM_STALENESS, "Maximum"),
        )
        return [
            cloudwatch.GraphWidget(
                title=title, left=[upstream_metric(name, upstream, statistic) for upstream in upstreams], width=8
            )
            for title, name, statistic in panels
        ]

    def _alarm(
        self,
        id: str,
        description: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        comparison: cloudwatch.ComparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        # One bad period pages; no data is never an alarm (no copies, no failures, no Docker Hub traffic).
        alarm = cloudwatch.Alarm(
            self,
            id,
            alarm_name=self._alarm_name(id),
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=1,
            treat_missing_data=missing,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        alarm.add_ok_action(actions.SnsAction(self.topic))
        return alarm
