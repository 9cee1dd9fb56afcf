"""Other regions: ECR replication of the mirror's repositories, and what each replica region needs of its own.

What ECR replicates (user guide, "Private image replication" and "Considerations for using pull through cache"):
repositories a cache rule created are "treated like any other Amazon ECR repository", so their images replicate
like pushed ones; but only images pushed after replication is configured, and neither repository policies nor
lifecycle policies travel with them. A cache rule exists in its own region only, so a replica region has no
first pull and no 24-hour upstream check: its copies change when the home region's repository gets a push (ECR's
own refresh there, or the copier moving a tag). The mirror keeps its configured images fresh at home, so their
replicas follow within replication's delay ("the majority of images replicate in less than 30 minutes").

A replica stack per region (`EcrMirror-<region>`) gives the repositories replication creates there what the home
region's have: a REPLICATION creation template per cache prefix and per prefix of the direct copies (lifecycle,
mutable tags, the sharing pull policy), in place before replication creates the first of them.
"""

from __future__ import annotations

import os
from typing import Any

from aws_cdk import Aws, CfnRule, CfnRuleAssertion, Environment, Fn, Stack, Token
from aws_cdk import aws_ecr as ecr
from constructs import Construct

from ecr_mirror_cdk import constants
from ecr_mirror_cdk.config import Config, ConfigError, partition
from ecr_mirror_cdk.contract import direct_repositories

from . import regions
from .registry import creation_template, direct_templates

# ECR: "Each rule may contain up to 100 filters", "a maximum of 10 rules total".
FILTERS_PER_RULE = 100
MAX_RULES = 10


def replicated_filters(config: Config) -> list[str]:
    """Repository name prefixes to replicate: each cache prefix and the mirror prefix (with their slash), and each
    `target` elsewhere by name; one filter for every image at its default location, however many."""
    direct = [name.removesuffix("*") for name in direct_repositories(config)]
    wildcards = [name for name in direct if name.endswith("/")]
    direct = [name for name in direct if name in wildcards or not name.startswith(tuple(wildcards))]
    return [f"{rule.prefix}/" for rule in config.pull_through_cache] + direct


def replication_configuration(scope: Construct, id: str, *, config: Config) -> ecr.CfnReplicationConfiguration:
    """The one replication configuration of the region: replaces any the account had (docs/organization.md)."""
    filters = replicated_filters(config)
    chunks = [filters[i:i + FILTERS_PER_RULE] for i in range(0, len(filters), FILTERS_PER_RULE)]
    if len(chunks) > MAX_RULES:
        raise ConfigError(f"{config.origin}: replication: {len(filters)} repositories and cache prefixes to "
                          f"replicate; ECR takes at most {FILTERS_PER_RULE * MAX_RULES}")
    destinations = [
        ecr.CfnReplicationConfiguration.ReplicationDestinationProperty(region=region, registry_id=Aws.ACCOUNT_ID)
        for region in config.replication_regions
    ]
    rules = [
        ecr.CfnReplicationConfiguration.ReplicationRuleProperty(
            destinations=destinations,
            repository_filters=[
                ecr.CfnReplicationConfiguration.RepositoryFilterProperty(filter=name, filter_type="PREFIX_MATCH")
                for name in chunk
            ],
        )
        for chunk in chunks
    ]
    check_regions(scope, config)
    if Token.is_unresolved(Stack.of(scope).region):
        replicas_elsewhere_rule(scope, config)
    return ecr.CfnReplicationConfiguration(
        scope, id, replication_configuration=ecr.CfnReplicationConfiguration.ReplicationConfigurationProperty(
            rules=rules)
    )


def check_regions(scope: Construct, config: Config) -> None:
    """Each replica region has ECR (stacks/regions.py), in the stack's partition, and is not the stack's own region:
    one synth line for the first that is not, before any replica stack exists."""
    region = Stack.of(scope).region
    known = not Token.is_unresolved(region)
    # An environment-agnostic stack goes to the CLI's region, which the CLI hands the app as CDK_DEFAULT_REGION:
    # caught here, before the replica stacks (deployed first) could create their resources.
    deployed_to = region if known else os.environ.get("CDK_DEFAULT_REGION")
    where = "" if known else " (CDK_DEFAULT_REGION, where cdk deploys it)"
    for index, replica in enumerate(config.replication_regions):
        failure = replica_error(replica, deployed_to, where, config)
        if failure:
            raise ConfigError(f"{config.origin}: replication.regions[{index}]: {failure}")


def replicas_elsewhere_rule(scope: Construct, config: Config) -> None:
    """A stack whose region is known only at deploy time: its change set fails in a replica's region or partition."""
    CfnRule(
        scope,
        "ReplicationElsewhere",
        assertions=[
            CfnRuleAssertion(
                assert_=Fn.condition_not(Fn.condition_contains(list(config.replication_regions), Aws.REGION)),
                assert_description="replication.regions in the mirror config lists this stack's own region; "
                "ECR replicates only to other regions",
            ),
            CfnRuleAssertion(
                assert_=Fn.condition_equals(Aws.PARTITION, partition(config.replication_regions[0])),
                assert_description="replication.regions in the mirror config are in another partition; "
                "ECR replicates only within one",
            ),
        ],
    )


def replica_error(replica: str, home: str | None, where: str, config: Config) -> str | None:
    """Why `replica` cannot replicate the mirror in `home` (None: unknown until deploy), or None if it can."""
    if replica == home:
        return f"{replica!r} is the stack's own region{where}"
    replica_partition = regions.ecr_partition(replica)
    if replica_partition is None:
        return (f"{replica!r} is not a region with ECR in partition {' or '.join(regions.ECR_REGIONS)} "
                "(stacks/regions.py lists them)")
    # ECR: "Cross-Region replication is not supported between AWS partitions".
    if home is not None and partition(home) != replica_partition:
        return (f"{replica!r} is in partition {replica_partition}, the stack's region {home!r}{where} in "
                f"{partition(home)}; ECR replicates within one partition")
    deployable = regions.home_partitions(config)
    if home is None and replica_partition not in deployable:
        return (f"{replica!r} is in partition {replica_partition}; with pull_through_cache rules the mirror stack "
                f"deploys to {' or '.join(deployable)} only, and ECR replicates within one partition")
    return None


class MirrorReplicaStack(Stack):
    """What a replica region holds besides the replicated images: the creation templates. The default synthesizer,
    so `cdk bootstrap` covers its region and a large template (a pull policy per template) goes through the
    bootstrap bucket: CloudFormation takes at most 51,200 bytes inline."""

    def __init__(self, scope: Construct, *, config: Config, region: str, **kwargs: Any) -> None:
        super().__init__(
            scope,
            f"{constants.STACK_NAME}-{region}",
            env=Environment(region=region),
            description=f"ECR mirror replica in {region}: creation templates of the replicated repositories",
            **kwargs,
        )
        for rule in config.pull_through_cache:
            creation_template(self, f"{rule.upstream}-template", prefix=rule.prefix, applied_for="REPLICATION",
                              description=f"Replicas of the {rule.upstream} pull-through cache's repositories",
                              config=config)
        direct_templates(self, config, "REPLICATION")
