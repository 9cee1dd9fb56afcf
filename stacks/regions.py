"""Where the stack can run: the Powertools layer it pins, CodeBuild and ECR pull-through cache, per partition and
region; and where its replicas can be (stacks/replication.py): a region with ECR, in the stack's partition.

A region outside these tables fails synth with one line naming it when the stack's region is known; an
environment-agnostic template (the default `make synth`) carries the same table as a CloudFormation
mapping plus a rule that refuses any other region when the change set is created, before any resource is.
"""

from __future__ import annotations

from aws_cdk import Aws, CfnMapping, CfnRule, CfnRuleAssertion, Fn, Stack, Token
from constructs import Construct

from ecr_mirror_cdk import constants
from ecr_mirror_cdk.config import Config, ConfigError

# Powertools for AWS Lambda (Python) publishes its V3 layers from one account per partition, and lists the regions
# of each layer in its docs. Taken for the pinned layer (POWERTOOLS_TABLE_FOR; a test fails when
# constants.POWERTOOLS_LAYER_VERSION, constants.POWERTOOLS_VERSION or requirements*.txt move without this table)
# from aws-powertools/powertools-lambda-python: docs/getting-started/install.md at 33f2c8f8 ("Lambda Layer": the
# ARN ...-{python_version}-arm64:27 in every {region} of the regional table; China from 498634801083) and that
# table, docs/includes/_layer_homepage_arm64.md, "Python 3.13" (the stored copy, 0219b401, lists the same regions
# with the previous layer number, 25). The x86_64 table also has ca-west-1; arm64 does not. GovCloud (arm64:27
# from one account per region, install.md) is left out: the mirror stack is not checked against GovCloud, and
# ECR_REGIONS has none of its regions.
POWERTOOLS_TABLE_FOR = (27, "3.23.0")  # (layer version, Powertools version) the table below was taken for
POWERTOOLS_ACCOUNTS = {"aws": "017000801446", "aws-cn": "498634801083"}
POWERTOOLS_ARM64_REGIONS = {
    "aws": (
        "af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1",
        "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5",
        "ap-southeast-7", "ca-central-1", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2",
        "eu-west-1", "eu-west-2", "eu-west-3", "il-central-1", "me-central-1", "me-south-1", "mx-central-1",
        "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2",
    ),
    "aws-cn": ("cn-north-1",),
}
# Regions with AWS CodeBuild, which the mirror stack's build project needs: Powertools publishes its arm64 layer in
# mx-central-1, where CodeBuild is not (synth would stop in CDK's own region check, a jsii traceback). Source: the
# `codebuild` endpoints of botocore 1.44.18's data/endpoints.json (AWS General Reference, "AWS CodeBuild endpoints
# and quotas"); cfn-lint 1.58's CloudFormation schemas have no AWS::CodeBuild::Project in mx-central-1 either.
CODEBUILD_REGIONS = {
    "aws": (
        "af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-south-2",
        "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-6",
        "ap-southeast-7", "ca-central-1", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2",
        "eu-west-1", "eu-west-2", "eu-west-3", "il-central-1", "me-central-1", "me-south-1", "sa-east-1", "us-east-1",
        "us-east-2", "us-west-1", "us-west-2",
    ),
    "aws-cn": ("cn-north-1", "cn-northwest-1"),
}
# ECR: "Pull through cache rules are supported in all AWS Regions except AWS GovCloud (US) and the
# AWS Regions in China" (What's New, 2023-11-17, additional upstream registries).
PULL_THROUGH_CACHE_PARTITIONS = ("aws",)
# Regions with ECR, where a replica stack (repositories and creation templates, no Lambda) can go, in the
# partitions the mirror stack itself can be in (ECR replicates within one). Source: the `api.ecr` endpoints of
# botocore 1.44.8's data/endpoints.json (AWS General Reference, "Amazon ECR endpoints and quotas").
ECR_REGIONS = {
    "aws": (
        "af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1",
        "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5",
        "ap-southeast-6", "ap-southeast-7", "ca-central-1", "ca-west-1", "eu-central-1", "eu-central-2", "eu-north-1",
        "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2", "eu-west-3", "il-central-1", "me-central-1",
        "me-south-1", "mx-central-1", "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2",
    ),
    "aws-cn": ("cn-north-1", "cn-northwest-1"),
}


def powertools_layer_arn(partition: str, region: str) -> str:
    return (
        f"arn:{partition}:lambda:{region}:{POWERTOOLS_ACCOUNTS[partition]}:layer:"
        f"{constants.POWERTOOLS_LAYER_NAME}:{constants.POWERTOOLS_LAYER_VERSION}"
    )


def home_partitions(config: Config) -> tuple[str, ...]:
    """The partitions the mirror stack can be deployed to with this config."""
    return PULL_THROUGH_CACHE_PARTITIONS if config.pull_through_cache else tuple(POWERTOOLS_ACCOUNTS)


def supported_regions(config: Config) -> dict[str, str]:
    """Region -> Powertools layer ARN, for every region this config can be deployed to."""
    return {
        region: powertools_layer_arn(partition, region)
        for partition in home_partitions(config)
        for region in POWERTOOLS_ARM64_REGIONS[partition]
        if region in CODEBUILD_REGIONS[partition]
    }


def ecr_partition(region: str) -> str | None:
    """The partition of a region ECR_REGIONS lists, else None."""
    return next((partition for partition, regions in ECR_REGIONS.items() if region in regions), None)


def region_error(region: str, config: Config) -> str:
    if not any(region in regions for regions in POWERTOOLS_ARM64_REGIONS.values()):
        return (
            f"region {region}: no Powertools {constants.POWERTOOLS_LAYER_NAME} layer is published there "
            "(stacks/regions.py lists the regions that have one)"
        )
    if not any(region in regions for regions in CODEBUILD_REGIONS.values()):
        return (
            f"region {region}: AWS CodeBuild, which runs the mirror's build project, is not available there "
            "(stacks/regions.py lists the regions that have it)"
        )
    return (
        f"region {region}: ECR pull-through cache is not available in its partition; "
        "set `pull_through_cache: []` to mirror every image directly"
    )


def powertools_layer(scope: Construct, config: Config) -> str:
    """The layer ARN for the stack's region: a literal when the region is known, else Fn::FindInMap."""
    stack = Stack.of(scope)
    regions = supported_regions(config)
    if not Token.is_unresolved(stack.region):
        if stack.region not in regions:
            raise ConfigError(region_error(stack.region, config))
        return regions[stack.region]
    mapping = CfnMapping(scope, "PowertoolsLayer", mapping={r: {"Arn": arn} for r, arn in sorted(regions.items())})
    CfnRule(
        scope,
        "SupportedRegion",
        assertions=[
            CfnRuleAssertion(
                assert_=Fn.condition_contains(sorted(regions), Aws.REGION),
                assert_description="This region has no Powertools arm64 layer or no CodeBuild"
                + (" or no ECR pull-through cache" if config.pull_through_cache else "")
                + "; stacks/regions.py lists the supported regions",
            )
        ],
    )
    return mapping.find_in_map(Aws.REGION, "Arn")
