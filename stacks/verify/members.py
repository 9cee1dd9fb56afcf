"""`make verify`'s check of the organization's StackSet: each member account's stack instance is current.

The mirror stack tolerates any number of failed member accounts (stacks/stackset.py: FailureTolerancePercentage
100), so an account whose instance failed shows here, with its status reason, and not in the mirror stack's status.
"""

from __future__ import annotations

from typing import Any

from ecr_mirror_cdk.config import StackSet

from .checks import Check, code, listing

STACK_SET_NAME = "EcrMirror-Contract"  # ecr_mirror_cdk.constants.STACK_SET_NAME (its import starts the CDK's Node.js)
# StackInstanceComprehensiveStatus.DetailedStatus (CloudFormation API reference, ListStackInstances): an operation
# still under way, and "skipped because the account was suspended at the time of the operation".
UNDER_WAY = ("PENDING", "RUNNING")
SUSPENDED = "SKIPPED_SUSPENDED_ACCOUNT"
SHOWN = 10  # failed instances named on the line; the rest are counted
RETRY = ("fix the cause in each account (its stack's events), then retry the operation as the CloudFormation "
         "user guide says (StackSets troubleshooting, 'Retrying failed stack creation or update operations')")


def _detailed(instance: dict[str, Any]) -> str:
    return str(instance.get("StackInstanceStatus", {}).get("DetailedStatus") or instance["Status"])


def _account(instance: dict[str, Any]) -> str:
    # StackInstanceSummary.Account is documented for self-managed StackSets; service-managed ones name the OU too.
    return str(instance.get("Account") or instance.get("OrganizationalUnitId") or "?")


def _named(instance: dict[str, Any]) -> str:
    reason = instance.get("StatusReason") or "no reason given"
    return f"{_account(instance)} {instance['Region']} {_detailed(instance)}: {reason}"


def check_members(stack_set: StackSet, cloudformation: Any) -> Check:
    """ListStackInstances, paged, as the StackSet's administrator (`call_as`): every instance CURRENT."""
    from botocore.exceptions import ClientError

    region = cloudformation.meta.region_name
    try:
        pages = cloudformation.get_paginator("list_stack_instances").paginate(
            StackSetName=STACK_SET_NAME, CallAs=stack_set.call_as)
        instances = [instance for page in pages for instance in page["Summaries"]]
    except ClientError as err:
        if code(err) != "StackSetNotFoundException":
            raise
        return Check("member accounts", False, f"no StackSet {STACK_SET_NAME} in {region} (as {stack_set.call_as}): "
                                               "make deploy")
    failed: list[dict[str, Any]] = []
    under_way: list[dict[str, Any]] = []
    suspended: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    for instance in instances:
        detailed = _detailed(instance)
        if instance["Status"] == "CURRENT":
            current.append(instance)
        elif detailed in UNDER_WAY:
            under_way.append(instance)
        elif detailed == SUSPENDED:
            suspended.append(instance)
        else:
            failed.append(instance)
    if failed:
        named = "; ".join(_named(i) for i in failed[:SHOWN])
        more = f"; and {len(failed) - SHOWN} more" if len(failed) > SHOWN else ""
        return Check("member accounts", False, f"{len(failed)} of {len(instances)} stack instances of "
                                               f"{STACK_SET_NAME} are not current (the mirror is unaffected; those "
                                               f"accounts lack this deploy's contract): {named}{more}: {RETRY}")
    if under_way:
        where = listing([f"{_account(i)} {i['Region']}" for i in under_way])
        return Check("member accounts", False, f"{len(under_way)} of {len(instances)} stack instances of "
                                               f"{STACK_SET_NAME} are still deploying ({where}): "
                                               "run make verify again in a few minutes")
    if not instances:
        return Check("member accounts", True, f"{STACK_SET_NAME} has no stack instance yet: no account but the "
                                              "mirror's own is under sharing.stack_set.targets")
    skipped = f"; {len(suspended)} skipped (suspended accounts)" if suspended else ""
    return Check("member accounts", True, f"{len(current)} stack instances of {STACK_SET_NAME} current in "
                                          f"{len({_account(i) for i in current})} accounts{skipped}")
