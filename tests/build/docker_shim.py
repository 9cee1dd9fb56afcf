"""`docker` for the end-to-end test: the buildspec's docker commands, carried out by podman.

Maps `docker login`, `docker buildx create` and `docker buildx build` to podman 4.3 with vfs storage
under the test's tmp dir (SHIM_PODMAN_ROOT, SHIM_PODMAN_RUNROOT), chroot isolation, and plain HTTP for
the loopback registries. Any other docker command or flag fails loudly, so a buildspec change that
podman cannot stand in for shows up here, not as a silently different build.

What podman cannot take, and what stands in for it (covered statically in test_project.py):
- `--cache-from/--cache-to type=registry,ref=R:T,mode=max,image-manifest=true,oci-mediatypes=true`:
  podman's cache is a repository of per-step images (`--cache-to R --cache-from R --layers`), not
  BuildKit's cache manifest, so `mode=max`, `image-manifest` and `oci-mediatypes` are dropped.
- `--metadata-file`: podman writes no BuildKit metadata; the shim writes `containerimage.digest` from
  `podman push --digestfile`, the digest the registry stored.
- `--push`: podman build cannot push; the shim pushes every `--tag` after the build.
- `docker buildx create --driver docker-container`: podman has no builders; the shim pulls the
  `--driver-opt image=` BuildKit image, as the docker-container driver would, so the pull is observable.
- `--platform a,b`: a multi-platform build needs BuildKit (or podman --manifest); one platform only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VALUE_FLAGS = {"--builder", "--file", "-f", "--platform", "--tag", "-t", "--build-arg", "--build-context",
               "--cache-from", "--cache-to", "--metadata-file", "--target"}
BOOLEAN_FLAGS = {"--push", "--pull", "--load"}


def note(message: str) -> None:
    print(f"docker-shim: {message}", file=sys.stderr)


def podman(*args: str, stdin: int | None = None) -> int:
    command = ["podman", "--root", os.environ["SHIM_PODMAN_ROOT"], "--runroot", os.environ["SHIM_PODMAN_RUNROOT"],
               "--storage-driver", "vfs", "--events-backend", "none", *args]
    return subprocess.run(command, stdin=stdin).returncode


def login(args: list[str]) -> int:
    username, server, stdin = None, None, False
    while args:
        arg = args.pop(0)
        if arg in ("--username", "-u"):
            username = args.pop(0)
        elif arg == "--password-stdin":
            stdin = True
        elif arg.startswith("-"):
            raise SystemExit(f"docker-shim: login: unsupported flag {arg}")
        else:
            server = arg
    if not (username and stdin):
        raise SystemExit("docker-shim: login without --username/--password-stdin")
    # No server means Docker Hub; the test's "Docker Hub" is a loopback registry.
    server = server or os.environ["SHIM_DOCKER_HUB"]
    return podman("login", "--tls-verify=false", "--username", username, "--password-stdin", server)


def buildx_create(args: list[str]) -> int:
    images = [a.split("=", 1)[1] for a in args if a.startswith("image=")]
    if len(images) != 1:
        raise SystemExit("docker-shim: buildx create needs --driver-opt image=<buildkit image>")
    note(f"podman has no buildx builders; pulling the builder image {images[0]} as the docker-container driver would")
    return podman("pull", "--tls-verify=false", "--quiet", images[0])


def buildx_build(args: list[str]) -> int:
    options: list[str] = []
    tags: list[str] = []
    metadata_file, push, context = None, False, None
    while args:
        arg = args.pop(0)
        flag, eq, value = arg.partition("=")
        if flag in VALUE_FLAGS:
            value = value if eq else args.pop(0)
        elif arg in BOOLEAN_FLAGS:
            push = push or arg == "--push"
            continue
        elif arg.startswith("-"):
            raise SystemExit(f"docker-shim: buildx build: unsupported flag {arg}")
        else:
            context = arg
            continue
        if flag == "--builder":
            continue
        if flag in ("--cache-from", "--cache-to"):
            fields = dict(part.split("=", 1) for part in value.split(","))
            if fields.get("type") != "registry":
                raise SystemExit(f"docker-shim: {flag} {value}: only type=registry is expected")
            repository = fields["ref"].rsplit(":", 1)[0] if fields["ref"].rfind(":") > fields["ref"].rfind("/") \
                else fields["ref"]
            dropped = sorted(set(fields) - {"type", "ref"})
            note(f"{flag}: podman caches per step in {repository}; BuildKit-only {dropped or 'nothing'} dropped")
            options += [flag, repository]
            continue
        if flag == "--metadata-file":
            metadata_file = value
            continue
        if flag == "--platform" and "," in value:
            raise SystemExit("docker-shim: multi-platform builds need BuildKit")
        if flag in ("--tag", "-t"):
            tags.append(value)
        options += [flag, value]
    if context is None:
        raise SystemExit("docker-shim: buildx build without a context")
    code = podman("build", "--isolation", "chroot", "--tls-verify=false", "--layers", *options, context)
    if code or not push:
        return code
    digest = None
    for tag in tags:
        with tempfile.NamedTemporaryFile("r") as digest_file:
            code = podman("push", "--tls-verify=false", "--quiet", "--digestfile", digest_file.name, tag)
            if code:
                return code
            digest = digest or Path(digest_file.name).read_text().strip()
    if metadata_file:
        Path(metadata_file).write_text(json.dumps({"containerimage.digest": digest, "image.name": ",".join(tags)}))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["login"]:
        return login(argv[1:])
    if argv[:2] == ["buildx", "create"]:
        return buildx_create(argv[2:])
    if argv[:2] == ["buildx", "build"]:
        return buildx_build(argv[2:])
    raise SystemExit(f"docker-shim: unsupported command: docker {' '.join(argv)}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
