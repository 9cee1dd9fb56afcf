"""The synthesized buildspec's commands: shellcheck-clean, and the small behaviours each one promises."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ecr_mirror_cdk import buildspec
from tests.build import cfn, codebuild_local
from tests.support.busybox import push_busybox

needs_shellcheck = pytest.mark.skipif(shutil.which("shellcheck") is None,
                                      reason="shellcheck not installed (make test installs it)")


def commands(app):
    spec = cfn.buildspec(app.data)
    return [c for phase in codebuild_local.PHASES for part in ("commands", "finally")
            for c in spec["phases"].get(phase, {}).get(part, [])]


def shellcheck(tmp_path, name, text, *options, shell="bash"):
    path = tmp_path / name
    path.write_text(f"#!/bin/{shell}\n{text}\n")
    return subprocess.run(["shellcheck", f"--shell={shell}", *options, str(path)], capture_output=True, text=True)


@needs_shellcheck
def test_every_command_of_the_synthesized_buildspec_passes_shellcheck(build_app, ssm_build_app, tmp_path):
    every = commands(build_app) + commands(ssm_build_app)
    failures = [f"{c}\n{r.stdout}" for i, c in enumerate(every)
                if (r := shellcheck(tmp_path, f"command{i}.sh", c, "--severity=error")).returncode]
    assert not failures, "\n".join(failures)


@needs_shellcheck
def test_the_commands_read_as_one_script_have_no_shellcheck_findings_at_all(build_app, tmp_path):
    result = shellcheck(tmp_path, "buildspec.sh", "\n".join(commands(build_app)))
    assert result.returncode == 0, result.stdout


# `docker buildx create` flags in docker/buildx commands/create.go at v0.12.0 and v0.36.1 (`--buildkitd-config`
# came in v0.13.0; v0.12 answers it with exit 125, "unknown flag").
BUILDX_CREATE_FLAGS = {
    "v0.12.0": {"--name", "--driver", "--node", "--buildkitd-flags", "--config", "--platform", "--driver-opt",
                "--bootstrap", "--append", "--leave", "--use"},
    "v0.36.1": {"--name", "--driver", "--node", "--platform", "--driver-opt", "--buildkitd-flags",
                "--buildkitd-config", "--config", "--bootstrap", "--append", "--leave", "--use"},
}


@pytest.mark.parametrize("version", sorted(BUILDX_CREATE_FLAGS))
def test_the_builder_is_created_with_flags_buildx_accepts_from_v0_12_on(build_app, version):
    (create,) = [c for c in pre_build(build_app) if c.startswith("docker buildx create")]
    words = shlex.split(create)
    flags = {w for w in words if w.startswith("--")}
    assert flags <= BUILDX_CREATE_FLAGS[version], flags - BUILDX_CREATE_FLAGS[version]
    assert words[words.index("--config") + 1] == "$MIRROR_BUILDKIT_CONFIG"


# --- behaviours, run in bash against stand-ins for docker and aws -------------------------------------


def run_commands(app, tmp_path, env, commands):
    base = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "HOME": str(tmp_path),
            **cfn.environment(app.data, app.refs)}
    return codebuild_local.run({"phases": {"pre_build": {"commands": commands}}}, {**base, **env}, tmp_path)


def pre_build(app):
    return cfn.buildspec(app.data)["phases"]["pre_build"]["commands"]


def run_pre_build(app, tmp_path, env, *extra):
    """The pre_build commands up to (not including) the logins, then `extra`."""
    commands = pre_build(app)
    variables = commands[:next(i for i, c in enumerate(commands) if c.startswith("aws ecr"))]
    return run_commands(app, tmp_path, env, [*variables, *extra])


def test_the_image_tag_is_the_commits_short_sha(build_app, tmp_path):
    result = run_pre_build(build_app, tmp_path, {"CODEBUILD_RESOLVED_SOURCE_VERSION": "0123456789abcdef"},
                           'echo "tag=$IMAGE_TAG"')
    assert "tag=0123456\n" in result.output


def test_the_image_tag_falls_back_to_the_build_number_without_a_commit(build_app, tmp_path):
    result = run_pre_build(build_app, tmp_path, {"CODEBUILD_BUILD_NUMBER": "42"}, 'echo "tag=$IMAGE_TAG"')
    assert "tag=build-42\n" in result.output


def test_per_build_overrides_win_over_the_defaults(build_app, tmp_path):
    overrides = {"IMAGE_TAG": "v1.2.3", "IMAGE_REPO_NAME": "team/api", "CONTEXT_DIR": "services/api",
                 "PLATFORMS": "linux/arm64", "CODEBUILD_RESOLVED_SOURCE_VERSION": "0123456789abcdef"}
    result = run_pre_build(build_app, tmp_path, overrides,
                           'echo "$IMAGE_REPO_URI:$IMAGE_TAG $DOCKERFILE $PLATFORMS $CACHE_REF"')
    registry = f"{cfn.ACCOUNT}.dkr.ecr.{cfn.REGION}.amazonaws.com"
    assert (f"{registry}/team/api:v1.2.3 services/api/Dockerfile linux/arm64 "
            f"{registry}/images-cache:team-api--linux-arm64--main\n") in result.output


def test_the_cache_is_per_repository_platform_set_and_branch_and_a_branch_starts_from_main(build_app, tmp_path):
    env = {"CODEBUILD_WEBHOOK_HEAD_REF": "refs/heads/feature/login", "PLATFORMS": "linux/amd64,linux/arm64"}
    result = run_pre_build(build_app, tmp_path, env, 'echo "cache=$CACHE_REF from=$CACHE_REF_MAIN"')
    registry = f"{cfn.ACCOUNT}.dkr.ecr.{cfn.REGION}.amazonaws.com"
    assert (f"cache={registry}/images-cache:images--linux-amd64-linux-arm64--feature-login "
            f"from={registry}/images-cache:images--linux-amd64-linux-arm64--main\n") in result.output


def test_a_cache_tag_never_exceeds_what_a_registry_accepts(build_app, tmp_path):
    env = {"IMAGE_REPO_NAME": "team/" + "a" * 200, "CACHE_BRANCH": "b" * 50}
    result = run_pre_build(build_app, tmp_path, env, 'echo "tag=${CACHE_REF##*:}"')
    (tag,) = [line[4:] for line in result.output.splitlines() if line.startswith("tag=")]
    assert len(tag) == 128 and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", tag)


def test_build_args_are_split_as_a_shell_would_without_expanding_them(build_app, tmp_path):
    commands = pre_build(build_app)
    variables = commands[:next(i for i, c in enumerate(commands) if c.startswith("aws ecr"))]
    build_args = [c for c in commands if "BUILD_ARGS_FILE" in c and not c.startswith("BUILD_ARGS_FILE=")]
    env = {"BUILD_ARGS": 'VERSION=1.2 NOTE="two words" RAW=$HOME', "IMAGE_TAG": "t", "TAG_LATEST": "false"}
    result = run_commands(build_app, tmp_path, env, [*variables, *build_args, 'cat "$BUILD_ARGS_FILE"'])
    assert result.returncode == 0, result.output
    registry = f"{cfn.ACCOUNT}.dkr.ecr.{cfn.REGION}.amazonaws.com"
    assert ("--build-arg\nVERSION=1.2\n--build-arg\nNOTE=two words\n--build-arg\nRAW=$HOME\n"
            f"--tag\n{registry}/images:t\n") in result.output


@pytest.fixture
def recording_docker(tmp_path):
    """A `docker` that records its arguments and what it read on stdin."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {tmp_path}/docker.args\ncat >> {tmp_path}/docker.stdin\n')
    docker.chmod(0o755)
    return tmp_path


def docker_hub_login(app):
    return next(c for c in pre_build(app) if "DOCKER_HUB_TOKEN" in c)


def test_docker_hub_login_sends_the_token_on_stdin_only(build_app, recording_docker):
    env = {"DOCKER_HUB_USERNAME": "team", "DOCKER_HUB_TOKEN": "dckr_pat_secret"}
    result = run_pre_build(build_app, recording_docker, env, docker_hub_login(build_app))
    assert result.returncode == 0, result.output
    assert (recording_docker / "docker.args").read_text() == "login --username team --password-stdin\n"
    assert (recording_docker / "docker.stdin").read_text() == "dckr_pat_secret"
    assert "dckr_pat_secret" not in result.output


def test_a_placeholder_secret_gives_a_one_line_notice_and_no_login(build_app, recording_docker):
    env = {"DOCKER_HUB_USERNAME": "REPLACE_ME", "DOCKER_HUB_TOKEN": "generated-by-cloudformation"}
    result = run_pre_build(build_app, recording_docker, env, docker_hub_login(build_app))
    assert result.returncode == 0
    notices = [line for line in result.output.splitlines() if line.startswith("Notice:")]
    assert len(notices) == 1 and "REPLACE_ME" in notices[0]
    assert not (recording_docker / "docker.args").exists()


def test_the_placeholder_notice_says_what_a_missing_token_costs_and_nothing_untrue(build_app):
    notice = docker_hub_login(build_app)
    assert "cannot fetch images the mirror does not hold yet" in notice
    assert "bases come from the ECR mirror" not in notice


@pytest.mark.parametrize("platforms, installs", [("linux/amd64", False), ("linux/arm64", True),
                                                  ("linux/amd64,linux/arm64", True)])
def test_emulators_are_installed_only_for_platforms_the_host_cannot_run(build_app, recording_docker,
                                                                        platforms, installs):
    if os.uname().machine != "x86_64":
        pytest.skip("the cases assume an amd64 host")
    emulators = next(c for c in pre_build(build_app) if "BINFMT_IMAGE" in c)
    result = run_pre_build(build_app, recording_docker, {"PLATFORMS": platforms}, emulators)
    assert result.returncode == 0, result.output
    recorded = (recording_docker / "docker.args").read_text() if (recording_docker / "docker.args").exists() else ""
    assert recorded == ("run --privileged --rm tonistiigi/binfmt:latest --install all\n" if installs else "")


# --- the registry cache: only refs that exist, and one line for each that does not yet -----------------

needs_registry = pytest.mark.skipif(any(shutil.which(t) is None for t in ("skopeo", "docker-registry")),
                                    reason="needs skopeo and docker-registry (.ci/run installs them)")


@pytest.fixture
def cache_registry(tmp_path, registry):
    """A loopback registry as the mirror's ECR, and `docker` as the end-to-end shim (buildx imagetools via skopeo)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "docker"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).with_name("docker_shim.py")}" "$@"\n')
    shim.chmod(0o755)
    return registry


def cache_from(app, tmp_path, registry_host, env):
    """Run the pre_build variables, build-args and cache check; the --cache-from refs it chose, and the log."""
    commands = pre_build(app)
    variables = commands[:next(i for i, c in enumerate(commands) if c.startswith("aws ecr"))]
    build_args = [c for c in commands if "BUILD_ARGS_FILE" in c and not c.startswith("BUILD_ARGS_FILE=")]
    assert build_args[-1] == buildspec.CACHE_FROM
    env = {"MIRROR_REGISTRY": registry_host, "WORK_DIR": str(tmp_path), "IMAGE_TAG": "t", **env}
    result = run_commands(app, tmp_path, env, [*variables, *build_args, 'cat "$BUILD_ARGS_FILE"'])
    assert result.returncode == 0, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("[Container]")]  # the commands
    refs = [lines[i + 1].removeprefix("type=registry,ref=") for i, w in enumerate(lines) if w == "--cache-from"]
    return refs, "\n".join(lines) + "\n"


@needs_registry
def test_the_first_build_of_main_says_once_that_there_is_no_cache_yet(build_app, tmp_path, cache_registry):
    refs, output = cache_from(build_app, tmp_path, cache_registry.host, {})

    main = f"{cache_registry.host}/images-cache:images--linux-amd64--main"
    assert refs == []
    assert [line for line in output.splitlines() if "cache" in line and "--cache" not in line] == [
        f"no build cache yet for {main}"]
    assert "not found" not in output


@needs_registry
def test_a_new_branch_imports_mains_cache_and_says_its_own_is_not_there_yet(build_app, tmp_path, cache_registry):
    push_busybox(cache_registry.host, "images-cache", "images--linux-amd64--main", marker="main's cache")

    refs, output = cache_from(build_app, tmp_path, cache_registry.host, {"CACHE_BRANCH": "feature/login"})

    assert refs == [f"{cache_registry.host}/images-cache:images--linux-amd64--main"]
    assert output.count("no build cache yet for ") == 1
    assert f"no build cache yet for {cache_registry.host}/images-cache:images--linux-amd64--feature-login\n" in output


@needs_registry
def test_a_branch_with_its_own_cache_imports_both_without_a_word(build_app, tmp_path, cache_registry):
    for tag in ("images--linux-amd64--main", "images--linux-amd64--feature-login"):
        push_busybox(cache_registry.host, "images-cache", tag, marker=tag)

    refs, output = cache_from(build_app, tmp_path, cache_registry.host, {"CACHE_BRANCH": "feature/login"})

    assert refs == [f"{cache_registry.host}/images-cache:images--linux-amd64--{b}" for b in ("feature-login", "main")]
    assert "no build cache yet" not in output


@needs_registry
def test_a_cache_that_cannot_be_checked_is_left_to_buildkit_to_report(build_app, tmp_path, cache_registry):
    unreachable = "127.0.0.1:1"

    refs, output = cache_from(build_app, tmp_path, unreachable, {})

    assert refs == [f"{unreachable}/images-cache:images--linux-amd64--main"]
    assert "no build cache yet" not in output
