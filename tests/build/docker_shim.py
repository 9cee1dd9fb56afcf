"""`docker` for the end-to-end test: Debian's real docker client, except what needs a buildx builder.

`docker buildx create` and `docker buildx build` need BuildKit's docker-container driver, whose image
(moby/buildkit) cannot run here; podman 4.3 (vfs storage under SHIM_PODMAN_ROOT/SHIM_PODMAN_RUNROOT, chroot
isolation) stands in for them, and `docker login` goes to podman too, which does the pushes. Every other
docker command is the real client against the real daemon (DOCKER_HOST). Any flag the shim does not know
fails loudly, so a buildspec change podman cannot stand in for shows up here, not as a different build.

What stands in for what (the rest is covered statically in test_project.py):
- `docker buildx create --config F`: F's `[registry."X"] mirrors` become a registries.conf for
  podman, with the same path semantics (containers/image inserts a mirror's path after /v2/, as BuildKit
  does); docker.io's own location is the test's "Docker Hub", so a fallback is observable there. The
  builder image is pulled through that config, as the docker-container driver has dockerd pull it.
- `--cache-from/--cache-to type=registry,...`: podman caches per step in a repository (`--cache-to R
  --cache-from R --layers`); `mode=max`, `image-manifest`, `oci-mediatypes` and `ignore-error` are dropped.
- `--metadata-file`: written from `podman push --digestfile`, the digest the registry stored.
- `--push`: podman build cannot push; the shim pushes every `--tag` after the build.
- `--platform a,b`: a multi-platform build needs BuildKit; one platform only.
- `docker buildx imagetools inspect --raw REF`: skopeo fetches the manifest; a 404 is said as buildx says it,
  `ERROR: REF: not found` (cmd/buildx/main.go prints containerd's errdefs.ErrNotFound after "ERROR: ").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REAL_DOCKER = "/usr/bin/docker"

VALUE_FLAGS = {"--builder", "--file", "-f", "--platform", "--tag", "-t", "--build-arg", "--build-context",
               "--cache-from", "--cache-to", "--metadata-file", "--target"}
BOOLEAN_FLAGS = {"--push", "--pull", "--load"}
CREATE_VALUE_FLAGS = {"--name", "--driver", "--driver-opt", "--config"}
CREATE_BOOLEAN_FLAGS = {"--bootstrap", "--use"}


def note(message: str) -> None:
    print(f"docker-shim: {message}", file=sys.stderr)


def podman(*args: str, stdin: int | None = None) -> int:
    command = ["podman", "--root", os.environ["SHIM_PODMAN_ROOT"], "--runroot", os.environ["SHIM_PODMAN_RUNROOT"],
               "--storage-driver", "vfs", "--events-backend", "none", *args]
    env = dict(os.environ)
    if registries_conf().exists():
        env["CONTAINERS_REGISTRIES_CONF"] = str(registries_conf())
    return subprocess.run(command, stdin=stdin, env=env).returncode


def registries_conf() -> Path:
    return Path(os.environ["SHIM_PODMAN_ROOT"]).parent / "registries.conf"


def podman_mirrors(buildkit_config: Path) -> str:
    """BuildKit's `[registry."X"] mirrors = [...]` / `http = true` as containers-registries.conf(5)."""
    config = tomllib.loads(buildkit_config.read_text())["registry"]
    plain = {host for host, entry in config.items() if entry.get("http")}
    lines = ['unqualified-search-registries = ["docker.io"]', 'short-name-mode = "disabled"']
    for host, entry in config.items():
        if not entry.get("mirrors"):
            continue
        location = os.environ["SHIM_DOCKER_HUB"] if host == "docker.io" else host
        lines += ["[[registry]]", f'prefix = "{host}"', f'location = "{location}"', "insecure = true"]
        for mirror in entry["mirrors"]:
            insecure = "true" if mirror.split("/", 1)[0] in plain else "false"
            lines += ["[[registry.mirror]]", f'location = "{mirror}"', f"insecure = {insecure}"]
    return "\n".join(lines) + "\n"


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
    options: dict[str, list[str]] = {}
    while args:
        arg = args.pop(0)
        if arg in CREATE_VALUE_FLAGS:
            options.setdefault(arg, []).append(args.pop(0))
        elif arg not in CREATE_BOOLEAN_FLAGS:
            raise SystemExit(f"docker-shim: buildx create: unsupported flag {arg}")
    if options.get("--driver") != ["docker-container"]:
        raise SystemExit("docker-shim: buildx create: only --driver docker-container is expected")
    driver_opts = dict(opt.split("=", 1) for opt in options.get("--driver-opt", []))
    if "image" not in driver_opts or driver_opts.get("network") != "host":
        raise SystemExit("docker-shim: buildx create needs --driver-opt image=<buildkit image> and network=host")
    (config,) = options["--config"]
    registries_conf().write_text(podman_mirrors(Path(config)))
    note(f"podman has no buildx builders; pulling the builder image {driver_opts['image']} through {config}")
    return podman("pull", "--quiet", driver_opts["image"])


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


def buildx_imagetools_inspect(args: list[str]) -> int:
    ref, raw = None, False
    while args:
        arg = args.pop(0)
        if arg == "--builder":
            args.pop(0)
        elif arg == "--raw":
            raw = True
        elif arg.startswith("-"):
            raise SystemExit(f"docker-shim: buildx imagetools inspect: unsupported flag {arg}")
        else:
            ref = arg
    if not (raw and ref):
        raise SystemExit("docker-shim: buildx imagetools inspect: only --raw REF is expected")
    # skopeo reads podman's logins (REGISTRY_AUTH_FILE), which `docker login` made here.
    result = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                            capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    if result.returncode and "manifest unknown" in result.stderr:
        print(f"ERROR: {ref}: not found", file=sys.stderr)
    else:
        sys.stderr.write(result.stderr)
    return result.returncode


def main(argv: list[str]) -> int:
    if argv[:1] == ["login"]:
        return login(argv[1:])
    if argv[:2] == ["buildx", "create"]:
        return buildx_create(argv[2:])
    if argv[:2] == ["buildx", "build"]:
        return buildx_build(argv[2:])
    if argv[:3] == ["buildx", "imagetools", "inspect"]:
        return buildx_imagetools_inspect(argv[3:])
    if argv[:1] == ["buildx"]:
        raise SystemExit(f"docker-shim: unsupported command: docker {' '.join(argv)}")
    os.execv(REAL_DOCKER, [REAL_DOCKER, *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
