"""Prove the deployed mirror works in this account: one line per check, OK or what to fix.

    python -m stacks.verify --config mirror.yaml [--build] [--region REGION]

Checks the stack `EcrMirror` (its outputs and the SSM contract): it runs this config; each cache rule with
credentials authenticates upstream; the Docker Hub secret holds a token; the planner runs; every configured
tag is in ECR; CloudWatch can publish to the alarm topic and someone is subscribed; with sharing.stack_set, every
member account's stack instance is current (stacks/verify_members.py); with --build, the CodeBuild project builds
a one-line Dockerfile and no pull fell back to the upstream. Exit 0 only if all hold.
Reads no secret value beyond its username, and prints none.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ecr_mirror_cdk.config import Config, ConfigError, Image, load_config, parse_spec
from ecr_mirror_cdk.reference import DOCKER_HUB
from lambdas.mirror.ecr import PLACEHOLDER, registry_credentials
from lambdas.mirror.errors import CredentialsError

from .checks import Check, code, error, listing
from .set_token import aws_client, aws_problem
from .verify_members import check_members

STACK_NAME = "EcrMirror"  # ecr_mirror_cdk.constants.STACK_NAME (importing it would start the CDK's Node.js)
SPEC_PARAMETER = "/ecr-mirror/spec"  # ecr_mirror_cdk.constants.PARAMETER_SPEC, the config the planner reads
VERIFY_TAG = "mirror-verify"  # the tag --build pushes to the project's image repository
COPY_WAIT = 300.0  # seconds to wait for copies the planner just queued
ACTION_WAIT = 60.0  # seconds to wait for the test alarm's action in the alarm history
BUILD_WAIT = 1800.0  # seconds to wait for the test build
LOG_WAIT = 60.0  # seconds for the build's last log lines to arrive in CloudWatch Logs
POLL = 10.0
# Lambda's longest timeout: a synchronous invoke is never read-timed-out (and retried) before the planner ends.
LAMBDA_READ_TIMEOUT = 15 * 60 + 30


@dataclass
class Clock:
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], float] = time.monotonic


@dataclass
class Clients:
    """One boto3 client per service, made on first use in `region` unless given."""

    region: str | None = None
    given: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, service: str) -> Any:
        if service not in self.given:
            from botocore.config import Config as BotoConfig

            options = {"read_timeout": LAMBDA_READ_TIMEOUT, "retries": {"total_max_attempts": 1}}
            self.given[service] = aws_client(service, self.region,
                                             config=BotoConfig(**options) if service == "lambda" else None)
        return self.given[service]


def _aws(service: str, client: Any) -> Any:
    return client if client is not None else Clients()[service]


class StackMissing(Exception):
    pass


def stack_outputs(cloudformation: Any = None, stack_name: str = STACK_NAME) -> dict[str, str]:
    """The deployed stack's outputs; StackMissing with the fix when it is not there or not usable."""
    from botocore.exceptions import ClientError

    cloudformation = _aws("cloudformation", cloudformation)
    region = cloudformation.meta.region_name
    try:
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    except ClientError as err:
        if "does not exist" in error(err):  # ValidationError: Stack with id EcrMirror does not exist
            raise StackMissing(f"{stack_name} is not deployed in {region}: make deploy (or set AWS_REGION "
                               "to the stack's region)") from err
        raise
    status = stack["StackStatus"]
    if status.endswith("_IN_PROGRESS"):
        raise StackMissing(f"{stack_name} is {status}: wait for it to finish, then run make verify again")
    if not status.endswith("_COMPLETE") or status in ("ROLLBACK_COMPLETE", "DELETE_COMPLETE"):
        raise StackMissing(f"{stack_name} is {status}: see its events (aws cloudformation describe-stack-events "
                           f"--stack-name {stack_name}), fix the cause and make deploy")
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def check_stack(config: Config, ssm: Any = None, stack_name: str = STACK_NAME) -> Check:
    """The stack runs this config: the spec it stored for the planner is this file's."""
    ssm = _aws("ssm", ssm)
    region = ssm.meta.region_name
    from botocore.exceptions import ClientError

    try:
        deployed = ssm.get_parameter(Name=SPEC_PARAMETER)["Parameter"]["Value"]
    except ClientError as err:
        if code(err) != "ParameterNotFound":
            raise
        return Check("stack", False, f"{SPEC_PARAMETER} is missing in {region}: make deploy CONFIG={config.origin}")
    try:
        same = parse_spec(deployed, origin=SPEC_PARAMETER) == config
    except ConfigError:
        same = False
    if not same:
        return Check("stack", False, f"{stack_name} in {region} runs another config than {config.origin} "
                                     f"({SPEC_PARAMETER} differs): make deploy CONFIG={config.origin}")
    return Check("stack", True, f"{stack_name} in {region} runs {config.origin}")


def check_cache_rules(config: Config, ecr: Any = None) -> Check:
    """ECR ValidatePullThroughCacheRule: "for an upstream registry that requires authentication", it reads the
    rule's secret and logs in upstream (ECR API reference); rules without credentials have nothing to validate."""
    rules = config.pull_through_cache
    if not rules:
        return Check("cache rules", True, "none configured (pull_through_cache: [])")
    from botocore.exceptions import ClientError

    ecr = _aws("ecr", ecr)
    anonymous = [rule.prefix for rule in rules if not rule.credentials_secret]
    passed, problems = [], []
    for rule in rules:
        if not rule.credentials_secret:
            continue
        try:
            answer = ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix=rule.prefix)
        except ClientError as err:
            if code(err) != "PullThroughCacheRuleNotFoundException":
                raise
            problems.append(f"{rule.prefix}: no such rule in this registry (make deploy)")
            continue
        if answer.get("isValid"):
            passed.append(f"{rule.prefix} authenticates to {answer.get('upstreamRegistryUrl', rule.upstream_url)}")
            continue
        fix = ("make docker-hub-token" if rule.registry == DOCKER_HUB
               else f"make registry-token REGISTRY={rule.registry}")
        problems.append(f"{rule.prefix} cannot log in to {rule.upstream_url} with {rule.credentials_secret}: "
                        f"{answer.get('failure') or 'no reason given'}: store a valid token with {fix}")
    if problems:
        return Check("cache rules", False, "; ".join(problems))
    note = f"{', '.join(anonymous)} take{'s' if len(anonymous) == 1 else ''} no credentials" if anonymous else ""
    return Check("cache rules", True, "; ".join(filter(None, ["; ".join(passed), note])))


class _SecretReader:
    """registry_credentials' provider: the secret's string from Secrets Manager, uncached."""

    def __init__(self, secretsmanager: Any) -> None:
        self.client = secretsmanager

    def get(self, name: str, max_age: int = 0) -> str:
        return str(self.client.get_secret_value(SecretId=name)["SecretString"])


def check_docker_hub_secret(config: Config, secretsmanager: Any = None) -> Check:
    """The secret holds a username and token, not the placeholder the stack stores (lambdas.mirror.ecr)."""
    secretsmanager = _aws("secretsmanager", secretsmanager)
    name = config.docker_hub_credentials.secret_name
    try:
        credentials = registry_credentials(name, registry="Docker Hub", provider=_SecretReader(secretsmanager))
    except CredentialsError as err:
        return Check("Docker Hub token", False, f"{err}: make deploy creates it; store a token with "
                                                "make docker-hub-token")
    if credentials is None:
        return Check("Docker Hub token", False, f"{name} holds no token yet (the placeholder {PLACEHOLDER}): "
                                                "make docker-hub-token")
    return Check("Docker Hub token", True, f"{name} holds a token for {credentials[0]}")


def _log_group(lambda_: Any, name: str) -> str:
    try:
        return str(lambda_.get_function_configuration(FunctionName=name)["LoggingConfig"]["LogGroup"])
    except Exception:  # noqa: BLE001 - only for the hint: Lambda's default group name then
        return f"/aws/lambda/{name}"


def check_planner(outputs: Mapping[str, str], lambda_: Any = None) -> Check:
    """Invoke the planner synchronously and read the summary it returns (lambdas.mirror.jobs.plan_and_enqueue)."""
    lambda_ = _aws("lambda", lambda_)
    name = outputs.get("PlannerFunctionName")
    if not name:
        return Check("planner", False, "the stack has no output PlannerFunctionName (deployed before make verify "
                                       "existed): make deploy")
    from botocore.exceptions import ClientError

    try:
        response = lambda_.invoke(FunctionName=name, InvocationType="RequestResponse",
                                  Payload=json.dumps({"source": "make verify"}).encode())
    except ClientError as err:
        if code(err) != "TooManyRequestsException":
            raise
        return Check("planner", False, f"{name} is busy (a scheduled run holds its concurrency): "
                                       "run make verify again in a few minutes")
    payload = response["Payload"].read()
    try:
        result = json.loads(payload)
    except ValueError:
        result = None
    if response.get("FunctionError"):
        failure = result if isinstance(result, dict) else {}
        return Check("planner", False, f"{name} failed: {failure.get('errorType', response['FunctionError'])}: "
                                       f"{failure.get('errorMessage', '')}: see aws logs tail "
                                       f"{_log_group(lambda_, name)} --since 15m")
    if not isinstance(result, dict) or "tags" not in result:
        return Check("planner", False, f"{name} returned no plan summary: make deploy")
    tags, failed, queued = result["tags"], result.get("failed", 0), result.get("enqueued", 0)
    if failed:
        return Check("planner", False, f"{failed} of {tags} tags failed to plan (each is a 'failed' line in its log): "
                                       f"aws logs tail {_log_group(lambda_, name)} --since 15m")
    deferred = f", {result['deferred']} deferred (upstream quota)" if result.get("deferred") else ""
    return Check("planner", True, f"{result.get('images')} images, {tags} tags: {queued} queued for copy, "
                                  f"{result.get('skip', 0)} up to date{deferred}", queued=queued)


def _tags(ecr: Any, repository: str) -> set[str]:
    from botocore.exceptions import ClientError

    try:
        pages = ecr.get_paginator("list_images").paginate(repositoryName=repository, filter={"tagStatus": "TAGGED"})
        return {i["imageTag"] for page in pages for i in page["imageIds"] if "imageTag" in i}
    except ClientError as err:
        if code(err) != "RepositoryNotFoundException":
            raise
        return set()


def missing_tags(config: Config, ecr: Any) -> list[str]:
    """Each explicit tag not in its repository, and each tag_regex image with no matching tag."""
    missing = []
    for image in config.images:
        present = _tags(ecr, image.repository)
        missing += [f"{image.source}:{tag} ({image.repository})" for tag in image.tags if tag not in present]
        if image.tag_regex and not any(re.fullmatch(image.tag_regex, tag) for tag in present):
            missing.append(f"{image.source} ({image.repository}: no tag matching '{image.tag_regex}')")
    return missing


def check_images(config: Config, outputs: Mapping[str, str], ecr: Any = None, *, wait: float = 0.0,
                 clock: Clock | None = None) -> Check:
    """Every configured tag in ECR, waiting up to `wait` seconds for copies still under way."""
    ecr, clock = _aws("ecr", ecr), clock or Clock()
    deadline = clock.now() + wait
    missing = missing_tags(config, ecr)
    while missing and clock.now() < deadline:
        clock.sleep(POLL)
        missing = missing_tags(config, ecr)
    if missing:
        queue = outputs.get("DeadLetterQueueUrl", "the dead-letter queue")
        return Check("images", False, f"not in ECR: {listing(missing)}: copies may still be running (run make "
                                      f"verify again in a few minutes); failed copies wait in {queue}")
    tags = sum(len(image.tags) for image in config.images)
    regex = [image.source for image in config.images if image.tag_regex]
    matched = f", a tag_regex match for {listing(regex)}" if regex else ""
    return Check("images", True, f"{len(config.images)} images in ECR: all {tags} listed tags{matched}")


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
    cloudwatch, sns, clock = _aws("cloudwatch", cloudwatch), _aws("sns", sns), clock or Clock()
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


def build_image(config: Config) -> str | None:
    """A configured tag the build host (linux/amd64) can pull, preferring Docker Hub's: `python:3.13-slim`."""
    def fits(image: Image) -> bool:
        return bool(image.tags) and (not image.platforms or "linux/amd64" in image.platforms)

    candidates = sorted((image for image in config.images if fits(image)),
                        key=lambda image: image.ref.registry != DOCKER_HUB)
    return f"{candidates[0].source}:{candidates[0].tags[0]}" if candidates else None


def with_dockerfile(buildspec: str, dockerfile: str) -> str:
    """The project's own buildspec with a first command that writes `dockerfile` where the build looks for it
    (CONTEXT_DIR=. in the start directory); CDK stores the buildspec as JSON, which YAML reads too."""
    import yaml

    spec = yaml.safe_load(buildspec)
    install = spec["phases"]["install"]
    install["commands"] = [f"printf '%s\\n' {shlex.quote(dockerfile)} > Dockerfile", *install["commands"]]
    return json.dumps(spec, indent=2)


# ecr_mirror_cdk/setup/report.py report(): "mirror: N manifests served by the mirror (...); no request fell back to the
# upstream", or "...; K fell back to the upstream: ...", or "mirror: no record of this build's pulls (...)".
REPORT_LINE = re.compile(r"mirror: (\d+ manifests served by the mirror|no record of this build's pulls).*")
NO_FALLBACK = "; no request fell back to the upstream"


def report_line(logs: Any, group: str, stream: str) -> str | None:
    """The build's last report line in its CloudWatch Logs stream."""
    found, token = None, None
    while True:
        page = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True,
                                   **({"nextToken": token} if token else {}))
        for event in page["events"]:
            line = event["message"].strip()
            if REPORT_LINE.fullmatch(line):
                found = line
        if not page["events"] or page.get("nextForwardToken") in (None, token):
            return found
        token = page["nextForwardToken"]


def check_build(config: Config, outputs: Mapping[str, str], codebuild: Any = None, logs: Any = None, *,
                wait: float = BUILD_WAIT, clock: Clock | None = None) -> Check:
    """Start the ready-made project on a one-line Dockerfile and read its report line."""
    codebuild, logs, clock = _aws("codebuild", codebuild), _aws("logs", logs), clock or Clock()
    image = build_image(config)
    if image is None:
        return Check("build", False, f"{config.origin} has no image with explicit tags for linux/amd64 to build FROM")
    project = outputs["CodeBuildProjectName"]
    buildspec = codebuild.batch_get_projects(names=[project])["projects"][0]["source"]["buildspec"]
    build = codebuild.start_build(
        projectName=project,
        buildspecOverride=with_dockerfile(buildspec, f"FROM {image}"),
        environmentVariablesOverride=[
            {"name": "IMAGE_TAG", "value": VERIFY_TAG, "type": "PLAINTEXT"},
            {"name": "TAG_LATEST", "value": "false", "type": "PLAINTEXT"},
            {"name": "CONTEXT_DIR", "value": ".", "type": "PLAINTEXT"},
        ],
    )["build"]
    deadline = clock.now() + wait
    while not build.get("buildComplete") and clock.now() < deadline:
        clock.sleep(POLL)
        build = codebuild.batch_get_builds(ids=[build["id"]])["builds"][0]
    if not build.get("buildComplete"):
        return Check("build", False, f"{build['id']} still runs after {wait / 60:.0f} min: see "
                                     f"aws codebuild batch-get-builds --ids {build['id']}")
    where = build.get("logs", {})
    line = None
    deadline = clock.now() + LOG_WAIT
    while where.get("groupName") and where.get("streamName"):
        line = report_line(logs, where["groupName"], where["streamName"])
        if line or clock.now() >= deadline:
            break
        clock.sleep(POLL)
    status = build["buildStatus"]
    if status != "SUCCEEDED":
        phase = next((p["phaseType"] for p in build.get("phases", []) if p.get("phaseStatus") == "FAILED"), "?")
        return Check("build", False, f"{build['id']} {status} in {phase}: {line or 'no report line'}; "
                                     f"log: {where.get('deepLink', 'see the project in the CodeBuild console')}")
    if line is None:
        return Check("build", False, f"{build['id']} succeeded but its log has no report line of the "
                                     "setup's --report (ecr_mirror_cdk/setup): make deploy (the buildspec prints it)")
    served = re.match(r"mirror: (\d+) manifests", line)
    if not line.endswith(NO_FALLBACK) or served is None or served.group(1) == "0":
        return Check("build", False, f"FROM {image}: {line}")
    return Check("build", True, f"{build['id']} built FROM {image} and pushed :{VERIFY_TAG}; {line}")


def verify(config: Config, clients: Clients, *, build: bool = False, stack_name: str = STACK_NAME,
           clock: Clock | None = None) -> Iterator[Check]:
    """Each check as it completes; AWS errors a check does not handle become its FAIL line."""
    from botocore.exceptions import BotoCoreError, ClientError

    def guarded(name: str, run: Callable[[], Check]) -> Check:
        try:
            return run()
        except (BotoCoreError, ClientError) as err:
            return Check(name, False, error(err))

    try:
        outputs = stack_outputs(clients["cloudformation"], stack_name)
    except StackMissing as err:
        yield Check("stack", False, str(err))
        return
    except (BotoCoreError, ClientError) as err:
        yield Check("stack", False, error(err))
        return
    yield guarded("stack", lambda: check_stack(config, clients["ssm"], stack_name))
    yield guarded("cache rules", lambda: check_cache_rules(config, clients["ecr"]))
    yield guarded("Docker Hub token", lambda: check_docker_hub_secret(config, clients["secretsmanager"]))
    planner = guarded("planner", lambda: check_planner(outputs, clients["lambda"]))
    yield planner
    wait = COPY_WAIT if planner.queued else 0.0
    yield guarded("images", lambda: check_images(config, outputs, clients["ecr"], wait=wait, clock=clock))
    yield guarded("alarm topic", lambda: check_alarm_topic(outputs, clients["cloudwatch"], clients["sns"],
                                                           clock=clock))
    stack_set = config.sharing.stack_set if config.sharing else None
    if stack_set is not None:
        yield guarded("member accounts", lambda: check_members(stack_set, clients["cloudformation"]))
    if build:
        yield guarded("build", lambda: check_build(config, outputs, clients["codebuild"], clients["logs"],
                                                   clock=clock))


def main(argv: list[str] | None = None, *, clients: Mapping[str, Any] | None = None,
         clock: Clock | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stacks.verify", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mirror.yaml", help="the mirror config the stack was deployed with")
    parser.add_argument("--build", action="store_true",
                        help=f"also run the CodeBuild project on a one-line Dockerfile (pushes :{VERIFY_TAG})")
    parser.add_argument("--region", help="AWS region of the stack (default: AWS_REGION, else the profile's)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if clients is None:
        problem = aws_problem(args.region, "make verify")
        if problem:
            print(f"error: make verify: {problem}", file=sys.stderr)
            return 1
    ok = True
    for check in verify(config, Clients(args.region, dict(clients or {})), build=args.build, clock=clock):
        print(check.render(), flush=True)
        ok = ok and check.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
