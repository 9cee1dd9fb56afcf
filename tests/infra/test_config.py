"""mirror.yaml validation: every bad input fails with one line naming the file, the entry and the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ecr_mirror_cdk.config import DEFAULT_SCHEDULE, ConfigError
from ecr_mirror_cdk.config_parse import load_config, parse_config
from tests.support.models import shapes

from .conftest import REPO

GOOD_IMAGE = "  - source: python\n    tags: ['3.13-slim']\n"

# name: (file content, where the message must point, what it must say)
BAD_INPUTS = {
    "malformed reference": (
        "images:\n  - source: 'Python:Latest!'\n    tags: ['1']\n",
        "images[0] (Python:Latest!).source",
        "invalid",
    ),
    "invalid regex": (
        "images:\n  - source: node\n    tag_regex: '22\\.(\\d+'\n",
        "images[0] (node).tag_regex",
        "invalid regex",
    ),
    "entry without tags or tag_regex": (
        "images:\n  - source: python\n    platforms: [linux/amd64]\n",
        "images[0] (python)",
        "needs 'tags' or 'tag_regex'",
    ),
    "duplicate targets": (
        "images:\n  - {source: gcr.io/a/one, tags: ['1'], target: mirror/shared}\n"
        "  - {source: gcr.io/a/two, tags: ['1'], target: mirror/shared}\n",
        "images[1] (gcr.io/a/two).target",
        "also the target of images[0]",
    ),
    "unknown upstream": (
        f"images:\n{GOOD_IMAGE}pull_through_cache:\n  - upstream: dockerhub\n",
        "pull_through_cache[0].upstream",
        "unknown upstream 'dockerhub'",
    ),
    "invalid schedule": (
        f"images:\n{GOOD_IMAGE}schedule: every 6 hours\n",
        "schedule",
        "not an EventBridge",
    ),
    "cron without a question mark": (
        f"images:\n{GOOD_IMAGE}schedule: cron(0 3 * * * *)\n",
        "schedule",
        "needs '?'",
    ),
    "invalid platform": (
        "images:\n  - source: python\n    tags: ['3']\n    platforms: [linux/x86]\n",
        "images[0] (python).platforms[0]",
        "'linux/x86' is not a platform",
    ),
    "illegal target name": (
        "images:\n  - source: gcr.io/distroless/static\n    tags: [nonroot]\n    target: Mirror/Static\n",
        "images[0] (gcr.io/distroless/static).target",
        "not a legal ECR repository name",
    ),
    "unknown key in an entry": (
        "images:\n  - source: python\n    tagz: ['3']\n",
        "images[0] (python)",
        "unknown key 'tagz'",
    ),
    "a YAML number where a tag belongs": (
        "images:\n  - source: python\n    tags: [3.10]\n",
        "images[0] (python).tags[0]",
        '3.10 is a YAML number (read as 3.1), not a string: quote it, "3.10"',
    ),
    "a query in a tag": (
        "images:\n  - source: python\n    tags: ['v1?x=1']\n",
        "images[0] (python).tags[0]",
        "'v1?x=1' is not a tag",
    ),
    "a tag with a trailing space": (
        "images:\n  - source: python\n    tags: ['latest ']\n",
        "images[0] (python).tags[0]",
        "'latest ' is not a tag",
    ),
    "a tag starting with a dot": (
        "images:\n  - source: python\n    tags: ['.hidden']\n",
        "images[0] (python).tags[0]",
        "not starting with . or -",
    ),
    "a YAML syntax error": (
        "images:\n  - source: python\n    tags: [3.13, 3.12\nschedule: rate(1 hour)\n",
        "line 4, column 9",
        "not valid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence started on line 3, "
        "column 11)",
    ),
    "a key given twice": (
        "images:\n  - source: python\n    tags: ['1']\n    tags: ['2']\n",
        "line 4, column 5",
        "duplicate key 'tags' (first given on line 3)",
    ),
    "two unknown keys of different types": (
        f"images:\n{GOOD_IMAGE}1: one\nextra: two\n",
        "top level",
        "unknown key 1",
    ),
    "an unknown platform variant": (
        "images:\n  - source: python\n    tags: ['3']\n    platforms: [linux/amd64/v5]\n",
        "images[0] (python).platforms[0]",
        "'linux/amd64/v5' is not a platform",
    ),
    "an account id that is not 12 digits": (
        f"images:\n{GOOD_IMAGE}sharing:\n  accounts: ['111122223333', '12345678901']\n",
        "sharing.accounts[1]",
        "'12345678901' is not an AWS account id (12 digits",
    ),
    "an unquoted account id": (
        f"images:\n{GOOD_IMAGE}sharing:\n  accounts: [011122223333]\n",
        "sharing.accounts[0]",
        "011122223333 is not an AWS account id (12 digits, quoted)",
    ),
    "an organization id with capitals": (
        f"images:\n{GOOD_IMAGE}sharing:\n  organization_id: o-ABCDEFGHIJ\n  stack_set: {{targets: [r-a1b2]}}\n",
        "sharing.organization_id",
        "'o-ABCDEFGHIJ' is not an AWS Organizations id ('o-' and 10 to 32 lowercase letters or digits)",
    ),
    "an organization id too short": (
        f"images:\n{GOOD_IMAGE}sharing:\n  organization_id: o-abc123\n  stack_set: {{targets: [r-a1b2]}}\n",
        "sharing.organization_id",
        "'o-abc123' is not an AWS Organizations id",
    ),
    "the organization id as the StackSet's target": (
        f"images:\n{GOOD_IMAGE}sharing:\n  organization_id: o-a1b2c3d4e5\n  stack_set: {{targets: [o-a1b2c3d4e5]}}\n",
        "sharing.stack_set.targets[0]",
        "'o-a1b2c3d4e5' is not a root id (r- and 4 to 32 lowercase letters or digits) or an OU id",
    ),
    "a StackSet without an organization": (
        f"images:\n{GOOD_IMAGE}sharing:\n  accounts: ['111122223333']\n  stack_set: {{targets: [r-a1b2]}}\n",
        "sharing.stack_set",
        "needs sharing.organization_id",
    ),
    "a StackSet called as nobody it knows": (
        f"images:\n{GOOD_IMAGE}sharing:\n  organization_id: o-a1b2c3d4e5\n"
        "  stack_set: {targets: [r-a1b2], call_as: ADMIN}\n",
        "sharing.stack_set.call_as",
        "must be DELEGATED_ADMIN (a member account registered as the StackSets delegated administrator) or SELF",
    ),
    "sharing with nobody": (
        f"images:\n{GOOD_IMAGE}sharing: {{}}\n",
        "sharing",
        "needs 'organization_id', 'accounts' or both",
    ),
    "a replication region that is not a region name": (
        f"images:\n{GOOD_IMAGE}replication:\n  regions: [eu-west-1, Europe]\n",
        "replication.regions[1]",
        "'Europe' is not a region name like eu-west-1",
    ),
    "a replication region listed twice": (
        f"images:\n{GOOD_IMAGE}replication:\n  regions: [eu-west-1, eu-west-1]\n",
        "replication.regions[1]",
        "'eu-west-1' is listed twice",
    ),
    "replication regions in two partitions": (
        f"images:\n{GOOD_IMAGE}replication:\n  regions: [eu-west-1, cn-north-1]\n",
        "replication.regions[1]",
        "'cn-north-1' is in partition aws-cn, 'eu-west-1' in aws; ECR replicates within one partition",
    ),
    "a cache rule secret without the ECR prefix": (
        f"images:\n{GOOD_IMAGE}pull_through_cache:\n  - upstream: github-container-registry\n"
        "    credentials_secret: github-token\n",
        "pull_through_cache[0].credentials_secret",
        "'github-token': a cache rule's secret must be named ecr-pullthroughcache/...",
    ),
    "registry credentials a cache rule takes, without the ECR prefix": (
        f"images:\n{GOOD_IMAGE}registry_credentials:\n  ghcr.io: github-token\n"
        "pull_through_cache:\n  - upstream: github-container-registry\n",
        "registry_credentials.ghcr.io",
        "'github-token': a cache rule's secret must be named ecr-pullthroughcache/...",
    ),
    "registry credentials for a host that is not one": (
        f"images:\n{GOOD_IMAGE}registry_credentials:\n  'ghcr.io/org': ecr-pullthroughcache/ghcr\n",
        "registry_credentials.ghcr.io/org",
        "is not a registry host",
    ),
    "registry credentials for a host written in capitals": (
        f"images:\n{GOOD_IMAGE}registry_credentials:\n  GHCR.io: ecr-pullthroughcache/ghcr\n",
        "registry_credentials.GHCR.io",
        "(lowercase, as image references name it)",
    ),
    "registry credentials no image or rule uses": (
        f"images:\n{GOOD_IMAGE}registry_credentials:\n  ghrc.io: ecr-pullthroughcache/ghcr\n",
        "registry_credentials.ghrc.io",
        "no image and no cache rule uses 'ghrc.io'",
    ),
    "a target without a parent path for its creation template": (
        "images:\n  - source: gcr.io/distroless/static\n    tags: [nonroot]\n    target: distroless\n",
        "images[0] (gcr.io/distroless/static).target",
        "'distroless' has no '/': a mirrored repository takes its settings from the creation template of its "
        "prefix; name one, like 'mirror/distroless' or 'team/distroless'",
    ),
    "a tag mutability ECR does not know": (
        f"images:\n{GOOD_IMAGE}repositories:\n  tag_mutability: mutable\n",
        "repositories.tag_mutability",
        "must be MUTABLE, got 'mutable'",
    ),
    "unknown top-level key": (
        f"images:\n{GOOD_IMAGE}schedul: rate(1 hour)\n",
        "top level",
        "unknown key 'schedul'",
    ),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_names_the_file_the_entry_and_the_field(name: str, tmp_path: Path) -> None:
    content, where, says = BAD_INPUTS[name]
    path = tmp_path / "mirror.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {where}: "), message
    assert says in message
    assert "\n" not in message


@pytest.mark.parametrize(("schedule", "says"), [
    ("rate(10 minute)", "'rate(10 minute)': write 'rate(10 minutes)' (EventBridge takes the singular for 1 and "
                        "the plural above)"),
    ("rate(1 hours)", "'rate(1 hours)': write 'rate(1 hour)'"),
    ("rate(0 days)", "'rate(0 days)': the rate must be 1 or more days"),
    ("cron(0 * * * *)", "'cron(0 * * * *)' has 5 fields; EventBridge's cron takes 6: minutes hours day-of-month "
                        "month day-of-week year, with '?' in day-of-month or day-of-week: write 'cron(0 * * * ? *)'"),
    ("cron(0 3 * * 1)", "'cron(0 3 * * 1)' has 5 fields; EventBridge's cron takes 6: minutes hours day-of-month "
                        "month day-of-week year, with '?' in day-of-month or day-of-week"),
])
def test_a_schedule_in_the_wrong_shape_says_what_to_write(schedule: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "mirror.yaml"
    path.write_text(f"images:\n{GOOD_IMAGE}schedule: {schedule}\n")

    with pytest.raises(ConfigError) as error:
        load_config(path)

    assert str(error.value).startswith(f"{path}: schedule: {says}"), error.value


def test_the_fix_a_schedule_error_suggests_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "mirror.yaml"
    for schedule in ("rate(10 minutes)", "rate(1 hour)", "cron(0 * * * ? *)"):
        path.write_text(f"images:\n{GOOD_IMAGE}schedule: {schedule}\n")
        assert load_config(path).schedule == schedule


def test_a_file_that_is_not_utf8_is_one_line_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "mirror.yaml"
    path.write_bytes("images:\n  - source: python\n    tags: ['caf\u00e9']\n".encode("latin-1"))

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value) == f"{path}: line 3, column 16: not UTF-8 text (byte 0xe9); save the file as UTF-8"


def test_amd64_micro_architecture_levels_are_platforms(tmp_path: Path) -> None:
    path = tmp_path / "mirror.yaml"
    path.write_text("images:\n  - source: python\n    tags: ['3']\n    platforms: [linux/amd64/v2, linux/amd64/v3, "
                    "linux/amd64/v4, linux/arm64/v8.2, linux/arm/v6]\n")

    assert load_config(path).images[0].platforms == (
        "linux/amd64/v2", "linux/amd64/v3", "linux/amd64/v4", "linux/arm64/v8.2", "linux/arm/v6")


def test_yaml_merge_keys_may_be_overridden_without_counting_as_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "mirror.yaml"
    path.write_text("images:\n  - &base {source: python, tags: ['1']}\n  - <<: *base\n    source: node\n")

    assert [(i.source, i.tags) for i in load_config(path).images] == [("python", ("1",)), ("node", ("1",))]


def test_a_file_with_only_images_is_valid_and_gets_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mirror.yaml"
    path.write_text(f"images:\n{GOOD_IMAGE}")
    config = load_config(path)
    assert config.schedule == DEFAULT_SCHEDULE
    assert [r.upstream for r in config.pull_through_cache] == ["docker-hub", "ecr-public", "quay", "k8s"]
    assert config.docker_hub_credentials.secret_name == "ecr-pullthroughcache/docker-hub"
    assert config.images[0].repository == "mirror/docker.io/library/python"


def run_app(config: Path, outdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "CDK_OUTDIR": str(outdir),
            "CDK_CONTEXT_JSON": f'{{"mirror:config": "{config}", "aws:cdk:bundling-stacks": []}}',
        },
    )


def test_the_app_exits_1_with_one_clear_line_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "mirror.yaml"
    path.write_text(f"images:\n{GOOD_IMAGE}schedule: every 6 hours\n")
    result = run_app(path, tmp_path / "out")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {path}: schedule: 'every 6 hours' is not an EventBridge 'rate(...)' or 'cron(...)' expression"
    ]
    assert "Traceback" not in result.stderr


def test_the_app_synthesizes_a_minimal_file(tmp_path: Path) -> None:
    path = tmp_path / "mirror.yaml"
    path.write_text(f"images:\n{GOOD_IMAGE}")
    result = run_app(path, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "EcrMirror.template.json").is_file()


def test_every_image_is_a_direct_copy_even_where_a_cache_rule_covers_its_registry() -> None:
    config = parse_config({"images": [{"source": "moby/buildkit", "tags": ["buildx-stable-1"],
                                       "target": "tools/buildkit"},
                                      {"source": "python", "tags": ["3.13-slim"]}]})
    buildkit, python = config.images
    assert buildkit.repository == "tools/buildkit"
    assert python.repository == "mirror/docker.io/library/python"


@pytest.mark.parametrize("setting", ["IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION"])
def test_immutable_tags_are_refused_because_the_mirror_moves_tags(setting: str, tmp_path: Path) -> None:
    # Given a config asking ECR to refuse moving a tag, which the copier does whenever upstream moves one
    path = tmp_path / "mirror.yaml"
    path.write_text(f"images:\n{GOOD_IMAGE}repositories:\n  tag_mutability: {setting}\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    # Then one line names the file, the field and why (no exclusion filter can cover every mirrored tag)
    assert str(caught.value) == (
        f"{path}: repositories.tag_mutability: {setting} is refused: the mirror moves a tag whenever upstream does "
        "(python:3.13-slim is rebuilt), which ECR refuses on an immutable tag, and an exclusion covering every "
        "mirrored tag is MUTABLE; use MUTABLE")


def test_ecr_offers_no_exclusion_filter_that_covers_every_tag_but_the_wildcard() -> None:
    # botocore's ECR model: at most 5 WILDCARD filters of 1-128 tag characters; tag_regex and the tags lists are
    # open-ended, so only '*' covers them all, and an IMMUTABLE_WITH_EXCLUSION excluding '*' is MUTABLE.
    ecr = shapes("ecr")
    assert ecr["ImageTagMutabilityExclusionFilters"]["max"] == 5
    assert ecr["ImageTagMutabilityExclusionFilterType"]["enum"] == ["WILDCARD"]
    assert set(ecr["ImageTagMutability"]["enum"]) >= {"MUTABLE", "IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION"}


def test_a_direct_target_may_not_lie_under_a_cache_prefix() -> None:
    with pytest.raises(ConfigError, match=r"images\[0\] \(moby/buildkit\)\.target: .* pull-through cache prefix"):
        parse_config({"images": [{"source": "moby/buildkit", "tags": ["x"], "target": "docker-hub/moby/buildkit"}]})


SHARED = {
    "images": [{"source": "ghcr.io/org/app", "tags": ["1"]},
               {"source": "registry.example.com/team/base", "tags": ["2"]}],
    "pull_through_cache": [{"upstream": "docker-hub"}, {"upstream": "github-container-registry", "prefix": "ghcr"}],
    "registry_credentials": {"ghcr.io": "ecr-pullthroughcache/ghcr", "registry.example.com": "team/registry"},
    "sharing": {"organization_id": "o-a1b2c3d4e5", "accounts": ["111122223333"],
                "stack_set": {"targets": ["r-a1b2", "ou-a1b2-c3d4e5f6"], "call_as": "SELF"}},
    "replication": {"regions": ["eu-west-1", "us-west-2"]},
}


def test_sharing_replication_and_registry_credentials_survive_the_json_the_planner_reads() -> None:
    config = parse_config(SHARED)

    assert parse_config(json.loads(config.to_json())) == config
    assert config.sharing is not None and config.sharing.accounts == ("111122223333",)
    assert config.replication_regions == ("eu-west-1", "us-west-2")


def test_every_registry_the_mirror_logs_in_to_has_one_secret() -> None:
    config = parse_config(SHARED)

    # The ghcr rule takes the registry's secret, so the cache and the copier log in as one user.
    assert config.rule_for("ghcr.io") is not None
    assert config.rule_for("ghcr.io").credentials_secret == "ecr-pullthroughcache/ghcr"  # type: ignore[union-attr]
    assert config.credential_secrets() == {
        "docker.io": "ecr-pullthroughcache/docker-hub",
        "ghcr.io": "ecr-pullthroughcache/ghcr",
        "registry.example.com": "team/registry",
    }


def test_a_cache_rule_and_registry_credentials_naming_different_secrets_is_refused() -> None:
    data = {**SHARED, "pull_through_cache": [
        {"upstream": "github-container-registry", "credentials_secret": "ecr-pullthroughcache/other"}]}

    with pytest.raises(ConfigError, match=r"^shared.yaml: pull_through_cache\[0\]\.credentials_secret: "
                                          r"'ecr-pullthroughcache/other' differs from registry_credentials\.ghcr\.io"):
        parse_config(data, origin="shared.yaml")


def test_a_private_registry_whose_cache_rule_takes_no_credentials_keeps_the_rule_anonymous() -> None:
    # ECR's quay rule takes no secret: the secret serves the direct copy of the image with a target.
    config = parse_config({
        "images": [{"source": "quay.io/team/private", "tags": ["1"], "target": "mirror/team-private"}],
        "registry_credentials": {"quay.io": "team/quay"},
    })

    assert config.rule_for("quay.io") is not None
    assert config.rule_for("quay.io").credentials_secret is None  # type: ignore[union-attr]
    assert config.credential_secrets()["quay.io"] == "team/quay"
    assert config.images[0].repository == "mirror/team-private"
