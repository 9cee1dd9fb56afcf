"""Other accounts pull from the mirror: the registry policy and the pull policy every mirror repository carries.

Principals are the config's accounts (each account's root, so the account's own IAM decides which roles) and,
for an organization, any principal whose `aws:PrincipalOrgID` is that organization: never `*` without it.

Why both policies: ECR's registry policy is where a pull-through cache's first pull is granted
(`ecr:CreateRepository`, `ecr:BatchImportUpstreamImage`; user guide, "Private registry permissions"), but under
the registry policy's V1 scope ECR enforces only those two (and ReplicateImage) at the registry level, so the
pull itself is granted on each repository: creation templates give it to repositories the cache creates, and
the stack puts it on the repositories it creates.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from constructs import Construct

from lambdas.mirror.config import Sharing

PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
CACHE_FILL_ACTIONS = ["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"]


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


def pull_statements(sharing: Sharing) -> list[iam.PolicyStatement]:
    """For a repository policy, which names no resource (the repository is the resource)."""
    return statements(sharing, "MirrorPullFrom", PULL_ACTIONS)


def pull_policy_text(scope: Construct, sharing: Sharing) -> str:
    """The pull policy as the JSON text a repository creation template takes."""
    document = iam.PolicyDocument(statements=pull_statements(sharing))
    return Stack.of(scope).to_json_string(document)


def registry_policy(scope: Construct, id: str, *, sharing: Sharing, prefix_arns: list[str]) -> ecr.CfnRegistryPolicy:
    """Lets the shared principals make the cache rules create and fill repositories under their prefixes.

    The registry has one policy per region: this replaces any policy the account had (README "Sharing").
    """
    document = iam.PolicyDocument(statements=statements(sharing, "MirrorCacheFillFrom", CACHE_FILL_ACTIONS,
                                                        prefix_arns))
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
