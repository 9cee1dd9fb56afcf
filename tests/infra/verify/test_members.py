"""`make verify` with the organization's StackSet: each member account's stack instance is current, or the one
FAIL line names every account, region and status reason that is not. The mirror stack itself is moto's; botocore's
Stubber answers ListStackInstances (moto's has no service-managed StackSets)."""

from __future__ import annotations

from typing import Any

import pytest

from ecr_mirror_cdk import constants
from ecr_mirror_cdk.config import StackSet
from ecr_mirror_cdk.config_parse import load_config
from stacks.verify.members import STACK_SET_NAME, check_members
from stacks.verify.stack import SPEC_PARAMETER

from .world import Partly, World, failures, ready

SHARING = """\
sharing:
  organization_id: o-a1b2c3d4e5
  stack_set: {targets: [r-a1b2], call_as: SELF}
"""
MEMBER, OTHER = "111122223333", "444455556666"
REASON = ("ResourceLogicalId:EcrMirrorPull, ResourceType:AWS::IAM::ManagedPolicy, ResourceStatusReason:A policy "
          "called EcrMirrorPull already exists. Duplicate names are not allowed.")


def instance(account: str, region: str, status: str = "CURRENT", detailed: str = "SUCCEEDED",
             reason: str | None = None) -> dict[str, Any]:
    return {"StackSetId": f"{STACK_SET_NAME}:1a2b", "Account": account, "Region": region, "Status": status,
            "StackInstanceStatus": {"DetailedStatus": detailed}, "OrganizationalUnitId": "r-a1b2",
            **({"StatusReason": reason} if reason else {})}


def shared(world: World) -> None:
    """The world's mirror deployed with sharing.stack_set (SELF: the management account's own StackSet)."""
    world.config_path.write_text(world.config_path.read_text() + SHARING)
    world.config = load_config(world.config_path)
    world.client("ssm").put_parameter(Name=SPEC_PARAMETER, Value=world.config.to_spec(), Type="String",
                                      Overwrite=True)


def instances(world: World, *pages: list[dict[str, Any]]) -> Partly:
    """A CloudFormation client whose ListStackInstances answers `pages`, asked as SELF and paged with NextToken."""
    cloudformation = Partly(world.aws, "cloudformation", {"get_paginator"})
    for n, page in enumerate(pages):
        expected = {"StackSetName": "EcrMirror-Contract", "CallAs": "SELF", **({"NextToken": f"t{n}"} if n else {})}
        answer = {"Summaries": page, **({"NextToken": f"t{n + 1}"} if n + 1 < len(pages) else {})}
        cloudformation.stub.add_response("list_stack_instances", answer, expected)
    return cloudformation


def test_a_member_account_that_failed_is_one_fail_line_naming_its_account_region_and_reason(
    world: World, capsys: pytest.CaptureFixture[str],
) -> None:
    shared(world)
    ready(world)
    cloudformation = instances(world, [instance(MEMBER, "us-east-1"), instance(MEMBER, "eu-west-1")],
                             [instance(OTHER, "us-east-1", "OUTDATED", "FAILED", REASON),
                              instance(OTHER, "eu-west-1")])

    status, lines = world.run(capsys=capsys, cloudformation=cloudformation)

    assert status == 1
    (line,) = failures(lines)
    assert line.startswith("FAIL  member accounts: 1 of 4 stack instances of EcrMirror-Contract are not current "
                           "(the mirror is unaffected; those accounts lack this deploy's contract): "
                           f"{OTHER} us-east-1 FAILED: {REASON}: fix the cause in each account")
    assert MEMBER not in line
    cloudformation.stub.assert_no_pending_responses()


def test_every_member_instance_current_is_an_ok_line_and_exit_0(
    world: World, capsys: pytest.CaptureFixture[str],
) -> None:
    shared(world)
    ready(world)
    cloudformation = instances(world, [instance(MEMBER, "us-east-1"), instance(OTHER, "us-east-1")],
                             [instance(OTHER, "eu-west-1", "OUTDATED", "SKIPPED_SUSPENDED_ACCOUNT")])

    status, lines = world.run(capsys=capsys, cloudformation=cloudformation)

    assert status == 0, lines
    assert "OK    member accounts: 2 stack instances of EcrMirror-Contract current in 2 accounts; 1 skipped " \
           "(suspended accounts)" in lines
    cloudformation.stub.assert_no_pending_responses()


def test_without_a_stackset_no_member_line_is_printed(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    ready(world)

    status, lines = world.run(capsys=capsys)

    assert status == 0, lines
    assert not [line for line in lines if "member accounts" in line]


def test_instances_an_operation_still_deploys_say_to_run_verify_again(world: World) -> None:
    cloudformation = instances(world, [instance(MEMBER, "us-east-1", "OUTDATED", "RUNNING"),
                                     instance(OTHER, "us-east-1")])

    check = check_members(StackSet(("r-a1b2",), "SELF"), cloudformation)

    assert not check.ok
    assert check.line == (f"1 of 2 stack instances of EcrMirror-Contract are still deploying ({MEMBER} us-east-1): "
                          "run make verify again in a few minutes")


def test_a_stackset_not_there_says_to_deploy(world: World) -> None:
    cloudformation = Partly(world.aws, "cloudformation", {"get_paginator"})
    cloudformation.stub.add_client_error("list_stack_instances", "StackSetNotFoundException",
                                         "StackSet EcrMirror-Contract not found")

    check = check_members(StackSet(("r-a1b2",), "DELEGATED_ADMIN"), cloudformation)

    assert (check.ok, check.line) == (False, "no StackSet EcrMirror-Contract in us-east-1 (as DELEGATED_ADMIN): "
                                             "make deploy")


def test_the_checker_asks_for_the_stackset_the_app_deploys() -> None:
    assert STACK_SET_NAME == constants.STACK_SET_NAME
