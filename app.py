#!/usr/bin/env python3
"""CDK entry point: `cdk synth -c mirror:config=PATH` (default mirror.yaml)."""

from __future__ import annotations

import sys

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from ecr_mirror_cdk import constants
from ecr_mirror_cdk.config import Config, ConfigError
from ecr_mirror_cdk.config_parse import load_config
from stacks.lambda_asset import AssetError
from stacks.limits import check_counts, check_templates
from stacks.mirror_stack import MirrorStack
from stacks.replication import MirrorReplicaStack

DEFAULT_CONFIG = "mirror.yaml"


def build(app: App, config: Config) -> MirrorStack:
    """The mirror stack (and a replica stack per replication region) with cdk-nag's AwsSolutions checks:
    any unacknowledged finding fails synth."""
    stack = MirrorStack(app, constants.STACK_NAME, config=config)
    for region in config.replication_regions:
        replica = MirrorReplicaStack(app, config=config, region=region)
        # Replication must find the region's creation templates, or it creates repositories without their policies.
        stack.add_stack_dependency(replica, "replica creation templates exist before replication creates repositories")
    check_counts(app, config.origin)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


def main() -> int:
    app = App()
    try:
        config = load_config(app.node.try_get_context("mirror:config") or DEFAULT_CONFIG)
        build(app, config)
        check_templates(app.synth().directory, config.origin)
    except (ConfigError, AssetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
