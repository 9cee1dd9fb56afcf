"""The sections that say how the mirror runs in the account: `schedule`, `sync`, `repositories`, `sharing` and
`replication`."""

from __future__ import annotations

import re
from typing import Any

from .config import (
    IMMUTABLE_SETTINGS,
    STACK_SET_CALL_AS,
    Repositories,
    Sharing,
    StackSet,
    Sync,
    partition,
)
from .config_fields import ECR_NAME, Fields

_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_CRON = re.compile(r"cron\((\S+ ){5}\S+\)")
_ACCOUNT = re.compile(r"[0-9]{12}")
# AWS Organizations API reference, Organization.Id: "o-" then 10 to 32 lowercase letters or digits.
_ORGANIZATION = re.compile(r"o-[a-z0-9]{10,32}")
# AWS::CloudFormation::StackSet DeploymentTargets.OrganizationalUnitIds: the root id (r-) or OU ids (ou-).
_STACK_SET_TARGET = re.compile(r"ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}|r-[a-z0-9]{4,32}")
# Region names as AWS writes them: us-east-1, ap-southeast-5, us-gov-west-1, cn-north-1, eusc-de-east-1.
_REGION = re.compile(r"[a-z]{2,4}(?:-(?:gov|iso[a-z]?))?-[a-z]+-[0-9]{1,2}")


class DeploymentSections(Fields):
    """Part of the parser (`config_parse._Parser`): one method per section."""

    def schedule(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail("schedule", f"must be a string like 'rate(6 hours)', got {value!r}")
        # EventBridge's own rules (user guide, "Setting a schedule pattern for scheduled rules"): a rate's unit
        # is singular for 1 and plural above; cron takes six fields, with '?' in day-of-month or day-of-week.
        rate = _RATE.fullmatch(value)
        if rate:
            count, unit = int(rate.group(1)), rate.group(2).rstrip("s")
            if count < 1:
                raise self.fail("schedule", f"{value!r}: the rate must be 1 or more {unit}s")
            fixed = f"rate({count} {unit}{'s' if count > 1 else ''})"
            if value != fixed:
                raise self.fail("schedule", f"{value!r}: write {fixed!r} (EventBridge takes the singular for 1 "
                                            "and the plural above)")
            return value
        fields = value[5:-1].split() if value.startswith("cron(") and value.endswith(")") else []
        if fields and len(fields) != 6:
            # A Unix cron's five fields, every day of the week: its EventBridge form adds '?' and the year.
            fix = f": write 'cron({' '.join(fields[:4])} ? *)'" if len(fields) == 5 and fields[4] == "*" else ""
            raise self.fail("schedule", f"{value!r} has {len(fields)} fields; EventBridge's cron takes 6: minutes "
                                        "hours day-of-month month day-of-week year, with '?' in day-of-month or "
                                        f"day-of-week{fix}")
        if _CRON.fullmatch(value):
            if "?" not in (fields[2], fields[4]):
                raise self.fail("schedule", f"{value!r}: a cron expression needs '?' in day-of-month or day-of-week")
            return value
        raise self.fail("schedule", f"{value!r} is not an EventBridge 'rate(...)' or 'cron(...)' expression")

    def sync(self, value: Any) -> Sync:
        raw = self.mapping(value, "sync", {"quota_reserve", "max_concurrency", "planner_reserved_concurrency"})
        reserved = raw.get("planner_reserved_concurrency")
        return Sync(
            quota_reserve=self.integer(raw.get("quota_reserve", 20), "sync.quota_reserve", 0, 10_000),
            max_concurrency=self.integer(raw.get("max_concurrency", 4), "sync.max_concurrency", 2, 100),
            planner_reserved_concurrency=(None if reserved is None else self.integer(
                reserved, "sync.planner_reserved_concurrency", 1, 10)),
        )

    def repositories(self, value: Any) -> Repositories:
        raw = self.mapping(value, "repositories", {"prefix", "tag_mutability", "untagged_expiry_days"})
        prefix = raw.get("prefix", "mirror")
        if not isinstance(prefix, str) or not ECR_NAME.fullmatch(prefix):
            raise self.fail("repositories.prefix", f"{prefix!r} is not a legal ECR repository name prefix")
        mutability = raw.get("tag_mutability", "MUTABLE")
        if mutability in IMMUTABLE_SETTINGS:
            # ECR refuses to move an immutable tag (ImageTagAlreadyExistsException), and the mirror moves every
            # tag it mirrors when upstream does. IMMUTABLE_WITH_EXCLUSION takes at most 5 WILDCARD tag filters
            # (botocore's ECR model, ImageTagMutabilityExclusionFilters): only '*' covers every tag, which is MUTABLE.
            raise self.fail("repositories.tag_mutability", f"{mutability} is refused: the mirror moves a tag whenever "
                                                           "upstream does (python:3.13-slim is rebuilt), which ECR "
                                                           "refuses on an immutable tag, and an exclusion covering "
                                                           "every mirrored tag is MUTABLE; use MUTABLE")
        if mutability != "MUTABLE":
            raise self.fail("repositories.tag_mutability", f"must be MUTABLE, got {mutability!r}")
        days = self.integer(raw.get("untagged_expiry_days", 7), "repositories.untagged_expiry_days", 1, 3650)
        return Repositories(prefix, mutability, days)

    def sharing(self, value: Any) -> Sharing | None:
        if value is None:
            return None
        raw = self.mapping(value, "sharing", {"organization_id", "accounts", "stack_set"})
        organization = raw.get("organization_id")
        if organization is not None and not (isinstance(organization, str) and _ORGANIZATION.fullmatch(organization)):
            raise self.fail("sharing.organization_id", f"{organization!r} is not an AWS Organizations id "
                                                       "('o-' and 10 to 32 lowercase letters or digits)")
        accounts = raw.get("accounts")
        if accounts is not None and not isinstance(accounts, list):
            raise self.fail("sharing.accounts", f"must be a list of 12-digit account ids, got {accounts!r}")
        ids: list[str] = []
        for i, account in enumerate(accounts or []):
            # An unquoted id is a YAML number, and one with a leading zero would lose it: ask for quotes.
            if not (isinstance(account, str) and _ACCOUNT.fullmatch(account)):
                raise self.fail(f"sharing.accounts[{i}]", f"{getattr(account, 'text', repr(account))} is not an "
                                                          "AWS account id (12 digits, quoted)")
            if account in ids:
                raise self.fail(f"sharing.accounts[{i}]", f"{account!r} is listed twice")
            ids.append(account)
        if organization is None and not ids:
            raise self.fail("sharing", "needs 'organization_id', 'accounts' or both")
        stack_set = self.stack_set(raw.get("stack_set"), organization)
        return Sharing(organization, tuple(ids), stack_set)

    def stack_set(self, value: Any, organization: str | None) -> StackSet | None:
        where = "sharing.stack_set"
        if value is None:  # the organization may pull; its accounts take the contract from the outputs
            return None
        if organization is None:
            raise self.fail(where, "needs sharing.organization_id (a StackSet reaches the accounts of an organization)")
        raw = self.mapping(value, where, {"targets", "call_as"})
        targets = raw.get("targets")
        if not isinstance(targets, list) or not targets:
            raise self.fail(f"{where}.targets", "must be a non-empty list: the organization's root id (r-...: every "
                                                f"account) or OU ids (ou-...), got {targets!r}")
        for i, target in enumerate(targets):
            if not (isinstance(target, str) and _STACK_SET_TARGET.fullmatch(target)):
                raise self.fail(f"{where}.targets[{i}]", f"{target!r} is not a root id (r- and 4 to 32 lowercase "
                                                         "letters or digits) or an OU id (ou-xxxx-xxxxxxxx); the "
                                                         "organization id (o-...) is not a target")
            if target in targets[:i]:
                raise self.fail(f"{where}.targets[{i}]", f"{target!r} is listed twice")
        call_as = raw.get("call_as", STACK_SET_CALL_AS[0])
        if call_as not in STACK_SET_CALL_AS:
            raise self.fail(f"{where}.call_as", f"must be DELEGATED_ADMIN (a member account registered as the "
                                                f"StackSets delegated administrator) or SELF (the management "
                                                f"account), got {call_as!r}")
        return StackSet(tuple(targets), call_as)

    def replication(self, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        raw = self.mapping(value, "replication", {"regions"})
        regions = raw.get("regions")
        if not isinstance(regions, list) or not regions:
            raise self.fail("replication.regions", f"must be a non-empty list of region names, got {regions!r}")
        # ECR: "up to 25 unique destinations across all rules" (user guide, private image replication).
        if len(regions) > 25:
            raise self.fail("replication.regions", f"{len(regions)} regions; ECR replicates to at most 25")
        names: list[str] = []
        for i, region in enumerate(regions):
            if not (isinstance(region, str) and _REGION.fullmatch(region)):
                raise self.fail(f"replication.regions[{i}]", f"{region!r} is not a region name like eu-west-1")
            if region in names:
                raise self.fail(f"replication.regions[{i}]", f"{region!r} is listed twice")
            # ECR: "Cross-Region replication is not supported between AWS partitions".
            if names and partition(region) != partition(names[0]):
                raise self.fail(f"replication.regions[{i}]", f"{region!r} is in partition {partition(region)}, "
                                f"{names[0]!r} in {partition(names[0])}; ECR replicates within one partition")
            names.append(region)
        return tuple(names)
