"""Names the stack and the Lambdas agree on: environment variables, metrics, message fields."""

# Environment variables the stack sets on the Lambdas.
ENV_SPEC_PARAMETER = "MIRROR_SPEC_PARAMETER"  # SSM parameter holding Config.to_json()
ENV_QUEUE_URL = "MIRROR_QUEUE_URL"  # SQS queue the planner fills and the copier drains
# Compact JSON {registry host: Secrets Manager secret name}: Config.credential_secrets(), Docker Hub's included.
ENV_REGISTRY_CREDENTIALS = "MIRROR_REGISTRY_CREDENTIALS"
ENV_REGISTRY = "MIRROR_REGISTRY"  # destination registry host; unset in Lambda: the account's ECR
ENV_STATE_PARAMETER = "MIRROR_STATE_PARAMETER"  # SSM parameter: when the planner first saw each pending change

# CloudWatch metrics (Powertools EMF). The service dimension is POWERTOOLS_SERVICE_NAME.
METRICS_NAMESPACE = "EcrMirror"
SERVICE_NAME = "ecr-mirror"
METRIC_COPIED = "ImagesCopied"
METRIC_SKIPPED = "ImagesSkipped"
METRIC_DEFERRED = "ImagesDeferred"
METRIC_FAILED = "ImagesFailed"
METRIC_BYTES = "BytesCopied"
METRIC_QUOTA_REMAINING = "DockerHubQuotaRemaining"  # ratelimit-remaining seen on Docker Hub HEADs
METRIC_UNVERIFIED = "ImagesUnverified"  # image/tags held: the digest moved, no signature from the `verify` key
# Per copy that handled referrers: artifacts copied, and those the destination refused (oci/copy_referrers.py).
METRIC_REFERRERS_COPIED = "ReferrersCopied"
METRIC_REFERRERS_FAILED = "ReferrersFailed"
# Per upstream registry (dimension `upstream`: docker.io, quay.io, ...), from each planner run.
DIMENSION_UPSTREAM = "upstream"
METRIC_UPSTREAM_QUOTA = "UpstreamQuotaRemaining"  # ratelimit-remaining the upstream's HEADs reported
METRIC_UPSTREAM_DEFERRED = "UpstreamImagesDeferred"  # image/tags left for a later run (quota, 429)
METRIC_UPSTREAM_STALENESS = "UpstreamStalenessSeconds"  # age of the oldest change not yet mirrored
SERVICE_METRICS = (METRIC_COPIED, METRIC_SKIPPED, METRIC_DEFERRED, METRIC_FAILED, METRIC_BYTES, METRIC_QUOTA_REMAINING,
                   METRIC_UNVERIFIED, METRIC_REFERRERS_COPIED, METRIC_REFERRERS_FAILED)
METRICS_PER_UPSTREAM = (METRIC_UPSTREAM_QUOTA, METRIC_UPSTREAM_DEFERRED, METRIC_UPSTREAM_STALENESS)
