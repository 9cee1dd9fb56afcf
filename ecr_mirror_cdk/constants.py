"""Names, sizes and timeouts of the mirror platform, in one place."""

from aws_cdk import Duration
from aws_cdk import aws_logs as logs

STACK_NAME = "EcrMirror"
DESCRIPTION = "ECR mirror platform: pull-through cache, scheduled image sync and a CodeBuild project"

# Lambdas. The copier streams whole images, so it gets the longest timeout Lambda allows.
PLANNER_HANDLER = "mirror.handlers.planner.handler"
COPIER_HANDLER = "mirror.handlers.copier.handler"
PLANNER_TIMEOUT = Duration.minutes(5)
COPIER_TIMEOUT = Duration.minutes(15)
PLANNER_MEMORY_MB = 512
COPIER_MEMORY_MB = 1024  # more memory buys more network and CPU for sha256 of streamed layers
LOG_RETENTION = logs.RetentionDays.ONE_MONTH
# Public Powertools layer; stacks/regions.py maps it per partition and region. Layer 27 holds Powertools
# 3.23.0 (aws-powertools/powertools-lambda-python#7689: 3.23.0 shipped as layer version 27);
# requirements-dev.txt pins the same version so the tests run what the Lambdas run. Bump all three together, and
# take stacks/regions.py's arm64 table again for the new layer (POWERTOOLS_TABLE_FOR).
POWERTOOLS_LAYER_NAME = "AWSLambdaPowertoolsPythonV3-python313-arm64"
POWERTOOLS_LAYER_VERSION = 27
POWERTOOLS_VERSION = "3.23.0"
# A failed planner run is retried twice; with sync.planner_reserved_concurrency an overlapping run waits in
# Lambda's async queue at most this long, then goes to the planner's failure queue (the next schedule plans again).
PLANNER_RETRY_ATTEMPTS = 2
PLANNER_MAX_EVENT_AGE = Duration.hours(1)

# Queue between planner and copier: one message per image/tag.
COPIER_BATCH_SIZE = 5
# AWS guidance: visibility at least six times the consumer's timeout, so retries never overlap a copy.
QUEUE_VISIBILITY_TIMEOUT = Duration.minutes(COPIER_TIMEOUT.to_minutes() * 6)
MAX_RECEIVE_COUNT = 3
DEAD_LETTER_RETENTION = Duration.days(14)

# Published contract (SSM String parameters).
PARAMETER_PREFIX = "/ecr-mirror"
PARAMETER_REGISTRY_URI = f"{PARAMETER_PREFIX}/registry-uri"
PARAMETER_PREFIXES = f"{PARAMETER_PREFIX}/pull-through-cache-prefixes"
PARAMETER_PROJECT_NAME = f"{PARAMETER_PREFIX}/codebuild-project-name"
PARAMETER_PROJECT_ARN = f"{PARAMETER_PREFIX}/codebuild-project-arn"
PARAMETER_ROLE_ARN = f"{PARAMETER_PREFIX}/codebuild-role-arn"
PARAMETER_SPEC = f"{PARAMETER_PREFIX}/spec"
# What an adopted build needs (ecr_mirror_cdk/adopt.py): setup_mirror.py's map, and the repositories it may pull.
PARAMETER_MIRROR_MAP = f"{PARAMETER_PREFIX}/mirror-map"
PARAMETER_PULL_REPOSITORY_ARNS = f"{PARAMETER_PREFIX}/pull-repository-arns"
# The setup module in the mirror's own bucket, for other accounts' builds (stacks/stackset.py), and in a replica
# region the mirror's home registry: published in every member account by the organization's StackSet.
PARAMETER_SETUP_BUCKET = f"{PARAMETER_PREFIX}/setup-bucket"
PARAMETER_SETUP_KEY = f"{PARAMETER_PREFIX}/setup-key"
PARAMETER_HOME_REGISTRY_URI = f"{PARAMETER_PREFIX}/home-registry-uri"
# The setup archive (ecr_mirror_cdk/setup_archive.py) under the key the single-file module had: setup lines and
# /ecr-mirror/setup-key parameters written before still fetch it there.
SETUP_KEY = "ecr_mirror_cdk/setup_mirror.py"
# The organization's StackSet and what it creates in each member account (stacks/member.py).
STACK_SET_NAME = f"{STACK_NAME}-Contract"
MEMBER_POLICY_NAME = "EcrMirrorPull"
# Not contract: the planner's memory of when it first saw each pending change (staleness metric).
PARAMETER_STATE = f"{PARAMETER_PREFIX}/state/pending-changes"
STANDARD_PARAMETER_BYTES = 4096
ADVANCED_PARAMETER_BYTES = 8192

# Docker Hub secret: ECR pull-through cache reads these two keys.
PLACEHOLDER = "REPLACE_ME"

# Observability.
ALARM_PERIOD = Duration.minutes(5)
QUOTA_PERIOD = Duration.minutes(15)
