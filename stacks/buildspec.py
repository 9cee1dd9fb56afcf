"""The buildspec of the mirror build project, as the object CDK serializes into the template.

Every command is bash (env.shell) and is checked by shellcheck in tests/build on the synthesized template.
Project environment variables (set by MirrorBuildProject, overridable per build) feed it:
MIRROR_REGISTRY, MIRROR_MAP, BUILDKIT_IMAGE, IMAGE_REPO_NAME, CACHE_REPO_NAME, REDIRECT_BUCKET, REDIRECT_KEY,
CONTAINER_NAME, PLATFORMS, CONTEXT_DIR, TAG_LATEST; and, unset unless a build sets them, IMAGE_TAG, DOCKERFILE,
BUILD_ARGS, CACHE_TAG. Docker Hub credentials come from the `env` section (Secrets Manager or Parameter Store).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .constants import PLACEHOLDER

BUILDER_NAME = "mirror"

# One command per line, so CodeBuild's log shows each step as it runs.
SETUP = [
    'WORK_DIR="$(mktemp -d)"',
    'IMAGE_REPO_URI="$MIRROR_REGISTRY/$IMAGE_REPO_NAME"',
    # One cache tag per image repository, so builds of different images never evict each other's cache.
    'CACHE_TAG="${CACHE_TAG:-${IMAGE_REPO_NAME//[^a-zA-Z0-9_.-]/-}}"',
    'CACHE_REF="$MIRROR_REGISTRY/$CACHE_REPO_NAME:${CACHE_TAG:0:128}"',
    # The tag: a per-build override wins, then the commit's short sha, then the build number.
    'SOURCE_SHA="${CODEBUILD_RESOLVED_SOURCE_VERSION:-}"',
    'IMAGE_TAG="${IMAGE_TAG:-${SOURCE_SHA:0:7}}"',
    'IMAGE_TAG="${IMAGE_TAG:-build-${CODEBUILD_BUILD_NUMBER:-0}}"',
    'CONTEXT_DIR="${CONTEXT_DIR:-.}"',
    'DOCKERFILE="${DOCKERFILE:-$CONTEXT_DIR/Dockerfile}"',
    'PLATFORMS="${PLATFORMS:-linux/amd64}"',
    'BUILD_ARGS_FILE="$WORK_DIR/build-args"',
    'METADATA_FILE="$WORK_DIR/metadata.json"',
    'echo "Building $IMAGE_REPO_URI:$IMAGE_TAG from $DOCKERFILE (context $CONTEXT_DIR, platforms $PLATFORMS)"',
]

ECR_LOGIN = 'aws ecr get-login-password | docker login --username AWS --password-stdin "$MIRROR_REGISTRY"'

_PLACEHOLDER_HELD = (
    f'[ "${{DOCKER_HUB_USERNAME:-{PLACEHOLDER}}}" = {PLACEHOLDER} ] || '
    f'[ "${{DOCKER_HUB_TOKEN:-{PLACEHOLDER}}}" = {PLACEHOLDER} ]'
)
# printf, not echo: the token never appears in a command line the log could show.
DOCKER_HUB_LOGIN = (
    f"if {_PLACEHOLDER_HELD}; then "
    f'echo "Notice: the Docker Hub secret still holds the placeholder {PLACEHOLDER}; skipping the Docker Hub login '
    '(bases come from the ECR mirror). Store a token with: make docker-hub-token"; '
    'else printf \'%s\' "$DOCKER_HUB_TOKEN" | docker login --username "$DOCKER_HUB_USERNAME" --password-stdin; fi'
)

REDIRECT = [
    'aws s3 cp --quiet "s3://$REDIRECT_BUCKET/$REDIRECT_KEY" "$WORK_DIR/redirect.py"',
    # Writes one build argument per line: --build-context NAME=docker-image://<mirror ref>, --build-arg K=V.
    'python3 "$WORK_DIR/redirect.py" --dockerfile "$DOCKERFILE" --registry "$MIRROR_REGISTRY" '
    '--map "$MIRROR_MAP" --build-args "${BUILD_ARGS:-}" --output "$BUILD_ARGS_FILE"',
    'printf -- \'--tag\\n%s\\n\' "$IMAGE_REPO_URI:$IMAGE_TAG" >> "$BUILD_ARGS_FILE"',
    'if [ "${TAG_LATEST:-false}" = true ]; then '
    'printf -- \'--tag\\n%s\\n\' "$IMAGE_REPO_URI:latest" >> "$BUILD_ARGS_FILE"; fi',
]

# The builder's own BuildKit image comes from the mirror too, or creating it would pull from Docker Hub.
BUILDER = (
    f'docker buildx create --name {BUILDER_NAME} --driver docker-container '
    '--driver-opt "image=$BUILDKIT_IMAGE" --bootstrap --use'
)

BUILD = (
    'mapfile -t build_args < "$BUILD_ARGS_FILE" && '
    f'docker buildx build --builder {BUILDER_NAME} --file "$DOCKERFILE" --platform "$PLATFORMS" '
    '--cache-from "type=registry,ref=$CACHE_REF" '
    '--cache-to "type=registry,ref=$CACHE_REF,mode=max,image-manifest=true,oci-mediatypes=true" '
    '--metadata-file "$METADATA_FILE" --push "${build_args[@]}" "$CONTEXT_DIR"'
)

POST_BUILD = [
    'IMAGE_URI="$IMAGE_REPO_URI:$IMAGE_TAG"',
    'IMAGE_DIGEST="$(python3 -c \'import json, sys; print(json.load(open(sys.argv[1]))["containerimage.digest"])\' '
    '"$METADATA_FILE")"',
    'printf \'[{"name":"%s","imageUri":"%s"}]\\n\' "$CONTAINER_NAME" "$IMAGE_URI" '
    '> "${CODEBUILD_SRC_DIR:-.}/imagedefinitions.json"',
    'printf \'{"ImageURI":"%s"}\\n\' "$IMAGE_URI" > "${CODEBUILD_SRC_DIR:-.}/imageDetail.json"',
    'echo "Pushed $IMAGE_URI ($IMAGE_DIGEST)"',
]


@dataclass(frozen=True)
class BuildSpecOptions:
    docker_hub_secret: str  # secret ARN or name; JSON keys username and accessToken
    ssm_username: str | None = None  # SSM SecureString names, for teams set up as in the blog posts
    ssm_token: str | None = None


def credentials_env(options: BuildSpecOptions) -> dict[str, Any]:
    if options.ssm_username and options.ssm_token:
        return {"parameter-store": {"DOCKER_HUB_USERNAME": options.ssm_username,
                                    "DOCKER_HUB_TOKEN": options.ssm_token}}
    return {"secrets-manager": {"DOCKER_HUB_USERNAME": f"{options.docker_hub_secret}:username",
                                "DOCKER_HUB_TOKEN": f"{options.docker_hub_secret}:accessToken"}}


def build_spec(options: BuildSpecOptions) -> dict[str, Any]:
    return {
        "version": "0.2",
        "env": {
            "shell": "bash",
            **credentials_env(options),
            "exported-variables": ["IMAGE_URI", "IMAGE_DIGEST"],
        },
        "phases": {
            "pre_build": {
                "on-failure": "ABORT",
                "commands": [*SETUP, ECR_LOGIN, DOCKER_HUB_LOGIN, *REDIRECT, BUILDER],
            },
            "build": {"on-failure": "ABORT", "commands": [BUILD]},
            "post_build": {"commands": POST_BUILD},
        },
        "artifacts": {"files": ["imagedefinitions.json", "imageDetail.json"]},
    }
