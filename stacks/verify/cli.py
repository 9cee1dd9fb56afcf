"""Prove the deployed mirror works in this account: one line per check, OK or what to fix.

    python -m stacks.verify --config mirror.yaml [--build] [--region REGION]

Checks the stack `EcrMirror` (its outputs and the SSM contract): it runs this config; each cache rule with
credentials authenticates upstream; the Docker Hub secret holds a token; the planner runs; every configured
tag is in ECR; CloudWatch can publish to the alarm topic and someone is subscribed; with sharing.stack_set, every
member account's stack instance is current (members.py); with --build, the CodeBuild project builds
a one-line Dockerfile and no pull fell back to the upstream. Exit 0 only if all hold.
Reads no secret value beyond its username, and prints none.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ecr_mirror_cdk.config import Config, ConfigError
from ecr_mirror_cdk.config_parse import load_config

from ..set_token import aws_problem
from .alarm import check_alarm_topic
from .build import VERIFY_TAG, check_build
from .checks import Check, error
from .clients import Clients, Clock
from .members import check_members
from .planner import COPY_WAIT, check_images, check_planner
from .stack import STACK_NAME, StackMissing, check_cache_rules, check_docker_hub_secret, check_stack, stack_outputs


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

