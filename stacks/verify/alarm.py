"""`make verify`'s check of the alarm topic: CloudWatch can publish to it and someone is subscribed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .checks import Check
from .clients import POLL, Clock, client

ACTION_WAIT = 60.0  # seconds to wait for the test alarm's action in the alarm history


def _last_action(cloudwatch: Any, alarm: str) -> dict[str, Any] | None:
    items = cloudwatch.describe_alarm_history(AlarmName=alarm, HistoryItemType="Action",
                                              ScanBy="TimestampDescending", MaxRecords=1)["AlarmHistoryItems"]
    return items[0] if items else None


def check_alarm_topic(outputs: Mapping[str, str], cloudwatch: Any = None, sns: Any = None, *,
                      wait: float = ACTION_WAIT,
                      clock: Clock | None = None) -> Check:
    """SetAlarmState: "When the updated state differs from the previous value, the action configured for the
    appropriate state is invoked" and the alarm "returns to [its] actual state quickly"; the action's outcome is
    in the alarm history, "Successfully executed action <arn>" or "Failed to execute action <arn>. Received
    error: ..." (CloudWatch API reference; AWS re:Post knowledge center, cloudwatch-receive-sns-for-alarm-trigger)."""
    cloudwatch, sns, clock = client("cloudwatch", cloudwatch), client("sns", sns), clock or Clock()
    topic = outputs["AlarmTopicArn"]
    alarms = sorted((a for a in cloudwatch.describe_alarms(ActionPrefix=topic)["MetricAlarms"]
                     if a.get("ActionsEnabled", True) and a["StateValue"] != "ALARM"), key=lambda a: a["AlarmName"])
    if not alarms:
        return Check("alarm topic", False, f"no alarm that notifies {topic} is out of ALARM to test with: see aws "
                                           f"cloudwatch describe-alarms --action-prefix {topic}")
    alarm = alarms[0]["AlarmName"]
    before = _last_action(cloudwatch, alarm)
    cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM",
                               StateReason="make verify: a test notification; the alarm returns to its state")
    deadline = clock.now() + wait
    action = _last_action(cloudwatch, alarm)
    while (action is None or action == before) and clock.now() < deadline:
        clock.sleep(POLL)
        action = _last_action(cloudwatch, alarm)
    if action is None or action == before:
        return Check("alarm topic", False, f"{alarm} recorded no action within {wait:.0f} s of its test alarm: see "
                                           f"aws cloudwatch describe-alarm-history --alarm-name {alarm}")
    summary = str(action.get("HistorySummary", ""))
    if not summary.startswith("Successfully executed action"):
        return Check("alarm topic", False, f"CloudWatch could not publish {alarm} to the topic: {summary}: the topic's "
                                           "or its KMS key's policy refuses CloudWatch (make deploy restores both)")
    pages = sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic)
    subscriptions = [s for page in pages for s in page["Subscriptions"]]
    confirmed = sorted({s["Protocol"] for s in subscriptions if s["SubscriptionArn"].startswith("arn:")})
    if not confirmed:
        pending = " (a subscription waits for confirmation: open the link in its email)" if subscriptions else ""
        return Check("alarm topic", False, f"CloudWatch publishes to the topic but nobody is subscribed{pending}: "
                                           f"aws sns subscribe --topic-arn {topic} --protocol email "
                                           "--notification-endpoint you@example.com")
    return Check("alarm topic", True, f"CloudWatch delivered a test alarm of {alarm} to the topic "
                                      f"({', '.join(confirmed)} subscribed): expect an ALARM and an OK message")

