"""`make verify`'s check of the alarm topic: CloudWatch can publish to it and someone is subscribed
(stacks/verify/alarm.py)."""

from __future__ import annotations

from .world import World, failures, ready


def test_an_alarm_cloudwatch_could_not_publish_says_which_policy_to_look_at(world: World, capsys) -> None:
    ready(world, action="Failed to execute action {topic}. Received error: \"CloudWatch Alarms does not have "
                        "authorization to access the SNS topic encryption key.\"")

    status, lines = world.run(capsys=capsys)

    assert status == 1
    assert len(failures(lines)) == 1
    assert failures(lines)[0].startswith(f"FAIL  alarm topic: CloudWatch could not publish EcrMirror-DeadLetters to "
                                         f"the topic: Failed to execute action {world.topic}. Received error:")
    assert failures(lines)[0].endswith("the topic's or its KMS key's policy refuses CloudWatch (make deploy "
                                       "restores both)")


def test_a_topic_nobody_subscribed_to_says_how_to_subscribe(world: World, capsys) -> None:
    sns = world.client("sns")
    for subscription in sns.list_subscriptions_by_topic(TopicArn=world.topic)["Subscriptions"]:
        sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
    ready(world)

    status, lines = world.run(capsys=capsys)

    assert status == 1
    assert failures(lines) == [f"FAIL  alarm topic: CloudWatch publishes to the topic but nobody is subscribed: aws "
                               f"sns subscribe --topic-arn {world.topic} --protocol email --notification-endpoint "
                               "you@example.com"]
