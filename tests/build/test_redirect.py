"""The redirect module: references, Dockerfile parsing and ARG resolution, and what the build is told to use."""

import io
import json

import pytest

from codebuild.redirect import (
    MirrorMap,
    Ref,
    arguments,
    expand,
    find_images,
    main,
    normalize,
    parse_build_args,
    parse_dockerfile,
    plan,
)
from lambdas.mirror.reference import parse

ECR = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
DIGEST = "sha256:" + "a" * 64
MIRROR = MirrorMap.from_json(ECR, json.dumps({
    "prefixes": {"docker.io": "docker-hub", "public.ecr.aws": "ecr-public", "quay.io": "quay"},
    "repositories": {
        "gcr.io/distroless/base-debian12": {"repository": "mirror/gcr.io/distroless/base-debian12",
                                            "tags": ["nonroot"], "tag_regex": None},
        "mcr.microsoft.com/dotnet/runtime": {"repository": "mirror/dotnet-runtime", "tags": [],
                                             "tag_regex": r"8\.0(-.+)?"},
    },
}))


def images(text: str, **build_args: str) -> list[str]:
    found, _ = find_images(parse_dockerfile(text), build_args)
    return [use.written for use in found]


def targets(text: str, **build_args: str) -> dict[str, str | None]:
    redirects, _ = plan(text, MIRROR, build_args)
    return {r.written: r.target for r in redirects}


# --- references ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("python", "docker.io/library/python:latest"),
        ("python:3.12-slim", "docker.io/library/python:3.12-slim"),
        ("user/app:1", "docker.io/user/app:1"),
        ("index.docker.io/user/app:1", "docker.io/user/app:1"),
        (f"ghcr.io/o/i@{DIGEST}", f"ghcr.io/o/i@{DIGEST}"),
        (f"python:3.12@{DIGEST}", f"docker.io/library/python@{DIGEST}"),
        ("host:5000/x", "host:5000/x:latest"),
        ("localhost/x:y", "localhost/x:y"),
    ],
)
def test_references_normalize_as_docker_does(text, expected):
    assert str(normalize(text)) == expected


@pytest.mark.parametrize(
    "text",
    ["python", "python:3", "user/app:1", "library/python", "docker.io/library/python:3", "index.docker.io/a/b",
     f"ghcr.io/o/i@{DIGEST}", "host:5000/x", "localhost/x:y", "127.0.0.1:5000/a/b/c:t", "[::1]:5000/a",
     "gcr.io/distroless/base-debian12:nonroot", "a__b/c.d-e:t_1"],
)
def test_the_self_contained_copy_normalizes_like_the_mirror_itself(text):
    ours, theirs = normalize(text), parse(text)
    assert (ours.registry, ours.repository, ours.tag, ours.digest) == (
        theirs.registry, theirs.repository, theirs.tag, theirs.digest)


@pytest.mark.parametrize("text", ["", "Python", "a//b", "x:bad tag", "ghcr.io/o/i@sha256:short", " python", "a/b:"])
def test_references_docker_refuses_are_refused(text):
    with pytest.raises(ValueError):
        normalize(text)


# --- Dockerfile parsing -------------------------------------------------------------------------------------


def test_instructions_are_case_insensitive_and_comments_are_skipped():
    dockerfile = parse_dockerfile("# a comment\nfrom python:3.12\n  # indented comment\nRun echo hi\n")
    assert [(i.keyword, i.arguments, i.line) for i in dockerfile.instructions] == [
        ("FROM", "python:3.12", 2), ("RUN", "echo hi", 4)]


def test_line_continuations_join_and_drop_comment_lines_inside():
    dockerfile = parse_dockerfile("FROM \\\n  # the base\n  python:3.12 \\\n  AS build\nRUN a\n")
    assert dockerfile.instructions[0].arguments.split() == ["python:3.12", "AS", "build"]
    assert dockerfile.instructions[1].line == 5


def test_parser_directives_are_read_and_the_escape_directive_changes_continuations():
    dockerfile = parse_dockerfile("# syntax=docker/dockerfile:1\n# escape=`\nFROM `\n  python\n")
    assert dockerfile.directives == {"syntax": "docker/dockerfile:1", "escape": "`"}
    assert dockerfile.instructions[0].arguments.split() == ["python"]


def test_a_directive_after_a_comment_is_only_a_comment():
    assert parse_dockerfile("# hello\n# syntax=x/y\nFROM a\n").directives == {}


def test_heredoc_bodies_are_not_read_as_instructions():
    text = "FROM python\nRUN <<EOF\nFROM evil/image\nEOF\nCOPY <<-END /x\n\tFROM other\n\tEND\nFROM node\n"
    assert images(text) == ["python", "node"]


# --- images the build pulls ---------------------------------------------------------------------------------


def test_every_from_copy_from_and_mount_from_image_is_found():
    text = (
        "FROM python:3.12 AS build\n"
        "COPY --from=ghcr.io/o/tool:1 /bin/tool /bin/tool\n"
        "RUN --mount=type=bind,from=quay.io/q/data:2,source=/d,target=/d make\n"
        "FROM gcr.io/distroless/base-debian12:nonroot\n"
        "COPY --from=build /app /app\n"
    )
    assert images(text) == ["python:3.12", "ghcr.io/o/tool:1", "quay.io/q/data:2",
                            "gcr.io/distroless/base-debian12:nonroot"]


def test_stage_names_and_indexes_are_not_images():
    text = "FROM python AS Build\nFROM build\nCOPY --from=BUILD /a /a\nCOPY --from=0 /b /b\nFROM build AS final\n"
    assert images(text) == ["python"]


def test_scratch_is_left_alone():
    assert images("FROM scratch\nCOPY a /a\n") == []


def test_the_platform_flag_is_not_the_image():
    assert images("FROM --platform=$BUILDPLATFORM python:3.12 AS build\n") == ["python:3.12"]


def test_global_arg_defaults_resolve_in_from():
    text = "ARG VERSION=3.12\nARG BASE=python:${VERSION}-slim\nFROM ${BASE}\nFROM node:$VERSION\n"
    assert images(text) == ["python:3.12-slim", "node:3.12"]


def test_build_args_override_arg_defaults():
    text = "ARG VERSION=3.12\nFROM python:${VERSION}\n"
    assert images(text, VERSION="3.13") == ["python:3.13"]


def test_default_forms_apply_to_unset_and_empty_args():
    text = "ARG TAG\nARG EMPTY=\nFROM python:${TAG:-3.12}\nFROM node:${EMPTY:-22}\nFROM alpine${TAG:+:x}\n"
    assert images(text) == ["python:3.12", "node:22", "alpine"]


def test_args_declared_inside_a_stage_do_not_reach_the_next_from():
    text = "FROM python\nARG LATER=node\nFROM ${LATER}\n"
    found, skipped = find_images(parse_dockerfile(text), {})
    assert [u.written for u in found] == ["python"]
    assert "LATER" in skipped[0].reason


def test_a_stage_redeclaring_a_global_arg_sees_its_value_in_copy_from():
    text = "ARG TOOL=ghcr.io/o/tool:1\nFROM python\nARG TOOL\nCOPY --from=$TOOL /t /t\n"
    assert images(text) == ["python", "ghcr.io/o/tool:1"]


def test_an_image_named_by_a_platform_arg_is_reported_not_guessed():
    _, skipped = find_images(parse_dockerfile("FROM ${TARGETARCH}/python\n"), {})
    assert "set by BuildKit per platform" in skipped[0].reason


def test_an_escaped_dollar_stays_literal():
    assert expand(r"a\$B-$C", {"B": "x", "C": "y"}) == "a$B-y"


# --- the mirror ---------------------------------------------------------------------------------------------


def test_pull_through_cache_registries_point_at_their_prefix():
    assert targets("FROM python:3.12-slim\nFROM user/app:1\nFROM quay.io/q/x\n") == {
        "python:3.12-slim": f"{ECR}/docker-hub/library/python:3.12-slim",
        "user/app:1": f"{ECR}/docker-hub/user/app:1",
        "quay.io/q/x": f"{ECR}/quay/q/x:latest",
    }


def test_a_digest_pin_survives_the_redirect():
    assert targets(f"FROM python@{DIGEST}\n") == {f"python@{DIGEST}": f"{ECR}/docker-hub/library/python@{DIGEST}"}


def test_directly_mirrored_repositories_redirect_only_their_mirrored_tags():
    assert targets(
        "FROM gcr.io/distroless/base-debian12:nonroot\nFROM gcr.io/distroless/base-debian12:debug\n"
        "FROM mcr.microsoft.com/dotnet/runtime:8.0-alpine\n"
    ) == {
        "gcr.io/distroless/base-debian12:nonroot": f"{ECR}/mirror/gcr.io/distroless/base-debian12:nonroot",
        "gcr.io/distroless/base-debian12:debug": None,
        "mcr.microsoft.com/dotnet/runtime:8.0-alpine": f"{ECR}/mirror/dotnet-runtime:8.0-alpine",
    }


def test_images_the_mirror_does_not_cover_are_untouched():
    redirects, _ = plan(f"FROM ghcr.io/o/i@{DIGEST}\nFROM host:5000/x\nFROM {ECR}/team/base:1\n", MIRROR, {})
    assert [r.target for r in redirects] == [None, None, None]
    assert arguments(redirects, None, {}) == []
    assert "ghcr.io is not mirrored" in redirects[0].describe()


def test_named_contexts_use_the_name_as_written_in_the_dockerfile():
    redirects, frontend = plan("FROM --platform=linux/arm64 python AS a\nFROM python\n", MIRROR, {})
    assert arguments(redirects, frontend, {}) == [
        "--build-context", f"python=docker-image://{ECR}/docker-hub/library/python:latest"]


def test_the_syntax_frontend_comes_from_the_mirror_through_buildkit_syntax():
    redirects, frontend = plan("# syntax=docker/dockerfile:1\nFROM scratch\n", MIRROR, {})
    assert arguments(redirects, frontend, {}) == [
        "--build-arg", f"BUILDKIT_SYNTAX={ECR}/docker-hub/docker/dockerfile:1"]


def test_build_args_are_passed_on_before_the_contexts():
    args = parse_build_args('VERSION=3.13 NOTE="two words" FROM_ENV MISSING', {"FROM_ENV": "e"})
    assert args == {"VERSION": "3.13", "NOTE": "two words", "FROM_ENV": "e"}
    redirects, _ = plan("ARG VERSION=3.12\nFROM python:$VERSION\n", MIRROR, args)
    assert arguments(redirects, None, args) == [
        "--build-arg", "VERSION=3.13", "--build-arg", "NOTE=two words", "--build-arg", "FROM_ENV=e",
        "--build-context", f"python:3.13=docker-image://{ECR}/docker-hub/library/python:3.13"]


# --- the command line CodeBuild runs ------------------------------------------------------------------------


def test_the_command_writes_one_argument_per_line_and_prints_each_redirect(tmp_path):
    (tmp_path / "Dockerfile").write_text("ARG V=3.12\nFROM python:${V} AS build\nFROM ghcr.io/o/i:1\n")
    out, printed = tmp_path / "args", io.StringIO()
    code = main(["--dockerfile", str(tmp_path / "Dockerfile"), "--registry", ECR, "--map",
                 json.dumps({"prefixes": {"docker.io": "docker-hub"}}), "--build-args", "V=3.13",
                 "--output", str(out)], environ={}, stdout=printed)
    assert code == 0
    assert out.read_text().splitlines() == [
        "--build-arg", "V=3.13", "--build-context", f"python:3.13=docker-image://{ECR}/docker-hub/library/python:3.13"]
    assert printed.getvalue().splitlines() == [
        f"mirror: FROM (line 2): python:3.13 -> {ECR}/docker-hub/library/python:3.13",
        "mirror: FROM (line 3): ghcr.io/o/i:1 left as is (ghcr.io is not mirrored)",
    ]


def test_a_missing_dockerfile_fails_with_a_message(tmp_path, capsys):
    code = main(["--dockerfile", str(tmp_path / "nope"), "--registry", ECR, "--output", str(tmp_path / "a")],
                environ={})
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_ref_pins_to_latest_when_untagged():
    assert Ref("docker.io", "library/python").pin == ":latest"
