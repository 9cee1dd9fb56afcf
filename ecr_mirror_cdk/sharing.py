"""Other accounts pull from the mirror: the registry policy and the pull policy every mirror repository carries.

Principals are the config's accounts (each account's root, so the account's own IAM decides which roles) and,
for an organization, any principal whose `aws:PrincipalOrgID` is that organization: never `*` without it.

Why both policies: ECR's registry policy is where a pull-through cache's first pull is granted
(`ecr:CreateRepository`, `ecr:BatchImportUpstreamImage`; user guide, "Private registry permissions"), but under
the registry policy's V1 scope ECR enforces only those two (and ReplicateImage) at the registry level, so the
pull itself is granted on each repository: creation templates give it to every repository ECR creates for the
mirror (a cache's first pull, the copier's first push, replication).
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from constructs import Construct

from .config import ConfigError, Sharing

PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
# A pull through a cache prefix creates the repository and imports the upstream image on first use.
CACHE_FILL_ACTIONS = ["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"]
# ECR API reference, SetRepositoryPolicy and PutRegistryPolicy: policyText is at most 10,240 characters.
MAX_POLICY_CHARACTERS = 10_240
# The longest values the pseudo parameters take, to size a policy at synth.
_LONGEST = {"AWS::Partition": "aws-us-gov", "AWS::Region": "ap-southeast-5", "AWS::AccountId": "123456789012"}


def statements(sharing: Sharing, sid: str, actions: list[str], resources: list[str] | None = None,
               ) -> list[iam.PolicyStatement]:
    """One statement for the listed accounts, one for the organization (with its condition)."""
    found = []
    if sharing.accounts:
        found.append(iam.PolicyStatement(
            sid=f"{sid}Accounts", actions=actions, resources=resources,
            principals=[iam.AccountPrincipal(account) for account in sharing.accounts],
        ))
    if sharing.organization_id:
        found.append(iam.PolicyStatement(
            sid=f"{sid}Organization", actions=actions, resources=resources, principals=[iam.AnyPrincipal()],
            conditions={"StringEquals": {"aws:PrincipalOrgID": sharing.organization_id}},
        ))
    return found


def pull_statements(scope: Construct, sharing: Sharing, origin: str) -> list[iam.PolicyStatement]:
    """For a repository policy, which names no resource (the repository is the resource)."""
    found = statements(sharing, "MirrorPullFrom", PULL_ACTIONS)
    check_size(scope, iam.PolicyDocument(statements=found), origin)
    return found


def pull_policy_text(scope: Construct, sharing: Sharing, origin: str) -> str:
    """The pull policy as the JSON text a repository creation template takes."""
    return Stack.of(scope).to_json_string(iam.PolicyDocument(statements=pull_statements(scope, sharing, origin)))


def check_size(scope: Construct, document: iam.PolicyDocument, origin: str) -> None:
    """A policy over ECR's limit fails synth with one line, not the deploy."""
    size = len(json.dumps(longest(Stack.of(scope).resolve(document)), separators=(",", ":")))
    if size > MAX_POLICY_CHARACTERS:
        raise ConfigError(f"{origin}: sharing.accounts: the policies would reach {size} characters, over ECR's "
                          f"{MAX_POLICY_CHARACTERS}; share with the organization (sharing.organization_id) instead")


def longest(value: Any, refs: dict[str, str] | None = None) -> Any:
    """A resolved value with each Ref as its longest text (pseudo parameters, and `refs` for template parameters)."""
    refs = {**_LONGEST, **(refs or {})}
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return refs.get(value["Ref"], value["Ref"])
    if isinstance(value, dict) and set(value) == {"Fn::Join"}:
        separator, parts = value["Fn::Join"]
        return separator.join(str(longest(part, refs)) for part in parts)
    if isinstance(value, dict):
        return {k: longest(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [longest(v, refs) for v in value]
    return value


def registry_policy(scope: Construct, id: str, *, sharing: Sharing, prefix_arns: list[str],
                    origin: str) -> ecr.CfnRegistryPolicy:
    """Lets the shared principals make the cache rules create and fill repositories under their prefixes.

    The registry has one policy per region: this replaces any policy the account had (docs/organization.md).
    """
    document = iam.PolicyDocument(statements=statements(sharing, "MirrorCacheFillFrom", CACHE_FILL_ACTIONS,
                                                        prefix_arns))
    check_size(scope, document, origin)
    policy = ecr.CfnRegistryPolicy(scope, id, policy_text=document)
    acknowledge_organization(policy, sharing)
    return policy


def acknowledge_organization(construct: Construct, sharing: Sharing) -> None:
    """cdk-nag's ECR1 flags any `*` principal and reads no condition; ours always carries aws:PrincipalOrgID."""
    if sharing.organization_id:
        Validations.of(construct).acknowledge(Acknowledgment(
            id="AwsSolutions-ECR1",
            reason=f"The only '*' principal is limited to the organization {sharing.organization_id} by "
            "aws:PrincipalOrgID (mirror.yaml sharing.organization_id).",
        ))
