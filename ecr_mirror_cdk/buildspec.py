"""The buildspec of the mirror build project, as the object CDK serializes into the template.

Every command is bash (env.shell) and is checked by shellcheck in tests/build on the synthesized template.
The first step points the build host's registries at the mirror (the ecr_mirror_cdk/setup package as one archive,
fetched from S3); nothing after it knows about the mirror, and no Dockerfile or command of the team is read or changed.
Project environment variables (set by MirrorBuildProject, overridable per build) feed it:
MIRROR_REGISTRY, MIRROR_MAP, MIRROR_SETUP_BUCKET, MIRROR_SETUP_KEY, BUILDKIT_IMAGE, BINFMT_IMAGE,
IMAGE_REPO_NAME, CACHE_REPO_NAME, CONTAINER_NAME, PLATFORMS, CONTEXT_DIR, TAG_LATEST; and, unset unless a
build sets them, IMAGE_TAG, DOCKERFILE, BUILD_ARGS, CACHE_BRANCH. Docker Hub credentials come from the
`env` section (Secrets Manager or Parameter Store).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .constants import PLACEHOLDER

BUILDER_NAME = "mirror"

# Where the build keeps the setup file it fetched (a zip archive python3 runs: ecr_mirror_cdk/setup_archive.py),
# quoted for the shell.
SETUP_MODULE_PATH = '"${TMPDIR:-/tmp}/setup_mirror.py"'
# The one setup step, shared with adopted projects (ecr_mirror_cdk/adopt.py) and written into buildspec files by hand:
# one POSIX sh command line, so it runs in any shell, in buildspec version 0.1 (a shell per command) too.
# dockerd and BuildKit pull through the mirror from here on: docker pull/run, compose, testcontainers, builds.
SETUP_LINE = (
    f'aws s3 cp --quiet "s3://$MIRROR_SETUP_BUCKET/$MIRROR_SETUP_KEY" {SETUP_MODULE_PATH} '
    f"&& python3 {SETUP_MODULE_PATH}"
)

# One command per line, so CodeBuild's log shows each step as it runs.
SETUP = [
    'WORK_DIR="$(mktemp -d)"',
    'export MIRROR_BUILDKIT_CONFIG="${MIRROR_BUILDKIT_CONFIG:-$HOME/.docker/buildx/buildkitd.default.toml}"',
    SETUP_LINE,
]

VARIABLES = [
    'IMAGE_REPO_URI="$MIRROR_REGISTRY/$IMAGE_REPO_NAME"',
    # The tag: a per-build override wins, then the commit's short sha, then the build number.
    'SOURCE_SHA="${CODEBUILD_RESOLVED_SOURCE_VERSION:-}"',
    'IMAGE_TAG="${IMAGE_TAG:-${SOURCE_SHA:0:7}}"',
    'IMAGE_TAG="${IMAGE_TAG:-build-${CODEBUILD_BUILD_NUMBER:-0}}"',
    'CONTEXT_DIR="${CONTEXT_DIR:-.}"',
    'DOCKERFILE="${DOCKERFILE:-$CONTEXT_DIR/Dockerfile}"',
    'PLATFORMS="${PLATFORMS:-linux/amd64}"',
    # One cache per repository, platform set and branch; a new branch starts from the default branch's cache.
    'HEAD_REF="${CODEBUILD_WEBHOOK_HEAD_REF:-}"',
    'CACHE_BRANCH="${CACHE_BRANCH:-${HEAD_REF#refs/heads/}}"',
    'CACHE_BRANCH="${CACHE_BRANCH:-main}"',
    'CACHE_TAG="$IMAGE_REPO_NAME--$PLATFORMS--$CACHE_BRANCH"',
    'CACHE_MAIN="$IMAGE_REPO_NAME--$PLATFORMS--main"',
    'CACHE_TAG="${CACHE_TAG//[^a-zA-Z0-9_.-]/-}"',
    'CACHE_MAIN="${CACHE_MAIN//[^a-zA-Z0-9_.-]/-}"',
    'CACHE_REF="$MIRROR_REGISTRY/$CACHE_REPO_NAME:${CACHE_TAG:0:128}"',
    'CACHE_REF_MAIN="$MIRROR_REGISTRY/$CACHE_REPO_NAME:${CACHE_MAIN:0:128}"',
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
    f'echo "Notice: the Docker Hub secret still holds the placeholder {PLACEHOLDER}: the docker-hub cache rule cannot '
    'fetch images the mirror does not hold yet, and pulls that fall back to Docker Hub are anonymous. '
    'Store a token with: make docker-hub-token"; '
    'else printf \'%s\' "$DOCKER_HUB_TOKEN" | docker login --username "$DOCKER_HUB_USERNAME" --password-stdin; fi'
)

# QEMU emulators for platforms the host cannot run; the binfmt image comes through the daemon's mirror.
EMULATORS = (
    'NATIVE="linux/$(uname -m | sed \'s/x86_64/amd64/; s/aarch64/arm64/\')"; '
    'if [ "$PLATFORMS" != "$NATIVE" ]; then docker run --privileged --rm "$BINFMT_IMAGE" --install all; fi'
)

# docker-container builder (the registry cache needs it). network=host lets it reach the loopback mirror
# endpoint (buildx docs, docker-container driver options); its image is pulled by dockerd, through the mirror.
# `--config`, not `--buildkitd-config`: the latter exists from buildx v0.13.0 (commit 56fc68eb), and v0.12 exits
# 125 "unknown flag"; `--config` is v0.12's flag and still a hidden alias in v0.36 (docker/buildx commands/create.go).
BUILDER = (
    f'docker buildx create --name {BUILDER_NAME} --driver docker-container '
    '--driver-opt "image=$BUILDKIT_IMAGE" --driver-opt network=host '
    '--config "$MIRROR_BUILDKIT_CONFIG" --bootstrap --use'
)

BUILD_ARGS = [
    # BUILD_ARGS='K=V K2="a b"' -> one --build-arg per line, split as a shell would (shlex, no expansion).
    'python3 -c \'import shlex, sys; [print(f"--build-arg\\n{a}") for a in shlex.split(sys.argv[1])]\' '
    '"${BUILD_ARGS:-}" > "$BUILD_ARGS_FILE"',
    'printf -- \'--tag\\n%s\\n\' "$IMAGE_REPO_URI:$IMAGE_TAG" >> "$BUILD_ARGS_FILE"',
    'if [ "${TAG_LATEST:-false}" = true ]; then '
    'printf -- \'--tag\\n%s\\n\' "$IMAGE_REPO_URI:latest" >> "$BUILD_ARGS_FILE"; fi',
]

# Import only caches that exist: for a missing --cache-from ref BuildKit prints an `ERROR ... not found` block at
# the end of a successful build, which every branch's first build would have. `imagetools inspect --raw` only
# fetches the manifest (docker/buildx util/imagetools/printers.go), and a 404 is containerd's "<ref>: not found"
# (remotes/docker/resolver.go, errdefs.ErrNotFound); any other failure keeps the ref, so BuildKit says what is wrong.
CACHE_FROM = (
    'if [ "$CACHE_REF_MAIN" = "$CACHE_REF" ]; then cache_refs=("$CACHE_REF"); '
    'else cache_refs=("$CACHE_REF" "$CACHE_REF_MAIN"); fi; '
    'for ref in "${cache_refs[@]}"; do '
    f'if docker buildx imagetools inspect --builder {BUILDER_NAME} --raw "$ref" > /dev/null 2> "$WORK_DIR/cache-check" '
    '|| ! grep -q "not found" "$WORK_DIR/cache-check"; then '
    'printf -- \'--cache-from\\ntype=registry,ref=%s\\n\' "$ref" >> "$BUILD_ARGS_FILE"; '
    'else echo "no build cache yet for $ref"; fi; done'
)

# ignore-error=true: a failed cache export never fails a build whose image was pushed (BuildKit README, cache).
BUILD = (
    'mapfile -t build_args < "$BUILD_ARGS_FILE" && '
    f'docker buildx build --builder {BUILDER_NAME} --file "$DOCKERFILE" --platform "$PLATFORMS" '
    '--cache-to "type=registry,ref=$CACHE_REF,mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true" '
    '--metadata-file "$METADATA_FILE" --push "${build_args[@]}" "$CONTEXT_DIR"'
)

REPORT = f"python3 {SETUP_MODULE_PATH} --report"

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
            "install": {"on-failure": "ABORT", "commands": SETUP},
            "pre_build": {
                "on-failure": "ABORT",
                "commands": [*VARIABLES, ECR_LOGIN, DOCKER_HUB_LOGIN, EMULATORS, BUILDER, *BUILD_ARGS, CACHE_FROM],
            },
            # `finally` runs whether or not the build failed: the line saying what the mirror served is in every log.
            "build": {"on-failure": "ABORT", "commands": [BUILD], "finally": [REPORT]},
            "post_build": {"commands": POST_BUILD},
        },
        "artifacts": {"files": ["imagedefinitions.json", "imageDetail.json"]},
    }
