"""`make verify`'s checks of the sync: the planner runs, and every configured tag is in ECR."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ecr_mirror_cdk.config import Config

from .checks import Check, code, listing
from .clients import POLL, Clock, client

COPY_WAIT = 300.0  # seconds to wait for copies the planner just queued


def _log_group(lambda_: Any, name: str) -> str:
    try:
        return str(lambda_.get_function_configuration(FunctionName=name)["LoggingConfig"]["LogGroup"])
    except Exception:  # noqa: BLE001 - only for the hint: Lambda's default group name then
        return f"/aws/lambda/{name}"


def check_planner(outputs: Mapping[str, str], lambda_: Any = None) -> Check:
    """Invoke the planner synchronously and read the summary it returns
    (lambdas.mirror.handlers.jobs.plan_and_enqueue)."""
    lambda_ = client("lambda", lambda_)
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
    ecr, clock = client("ecr", ecr), clock or Clock()
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

