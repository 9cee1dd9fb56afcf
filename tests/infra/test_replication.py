"""Other regions: the replication configuration, a replica stack per region, and never the stack's own region."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import Environment

from app import build
from ecr_mirror_cdk.config import ConfigError
from ecr_mirror_cdk.config_parse import parse_config
from stacks.mirror_stack import MirrorStack
from stacks.replication import replicated_filters
from tests.support.cdk import cdk_app

from .conftest import ACCOUNTS, ORG, SHARED, Synthesized
from .test_sharing import plain, pull_policy

REGIONS = ["eu-west-1", "us-west-2"]


def replica(app: Synthesized, region: str) -> dict[str, Any]:
    return json.loads((app.outdir / f"EcrMirror-{region}.template.json").read_text())


def test_the_cache_prefixes_and_mirrored_repositories_replicate_to_every_region(shared_app: Synthesized) -> None:
    [configuration] = [r["Properties"] for r in shared_app.data["Resources"].values()
                       if r["Type"] == "AWS::ECR::ReplicationConfiguration"]

    assert configuration == {"ReplicationConfiguration": {"Rules": [{
        "Destinations": [{"Region": region, "RegistryId": {"Ref": "AWS::AccountId"}} for region in REGIONS],
        # One filter for every image at its default location under mirror/, however many.
        "RepositoryFilters": [{"Filter": name, "FilterType": "PREFIX_MATCH"} for name in (
            "docker-hub/", "quay/", "mirror/")],
    }]}}


def test_a_target_elsewhere_replicates_by_its_name_and_one_under_the_mirror_prefix_needs_no_filter() -> None:
    config = parse_config({**SHARED, "images": [
        *SHARED["images"], {"source": "ghcr.io/org/api", "tags": ["1"], "target": "services/api"},
        {"source": "ghcr.io/org/web", "tags": ["1"], "target": "mirror/web"}]})

    assert replicated_filters(config) == ["docker-hub/", "quay/", "mirror/", "services/api"]


def test_each_replica_region_gets_creation_templates_for_every_repository_replication_creates(
    shared_app: Synthesized,
) -> None:
    for region in REGIONS:
        templates = [r["Properties"] for r in replica(shared_app, region)["Resources"].values()
                     if r["Type"] == "AWS::ECR::RepositoryCreationTemplate"]
        # The cache prefixes and the mirror prefix of the direct copies
        assert sorted(t["Prefix"] for t in templates) == ["docker-hub", "mirror", "quay"]
        for template in templates:
            # Replication carries no repository or lifecycle policy (ECR user guide), so the template adds them.
            assert template["AppliedFor"] == ["REPLICATION"]
            assert template["ImageTagMutability"] == "MUTABLE"
            assert json.loads(template["LifecyclePolicy"])["rules"][0]["selection"]["countNumber"] == 7
            assert json.loads(plain(template["RepositoryPolicy"])) == pull_policy(ACCOUNTS, ORG)


def test_each_replica_region_holds_its_templates_before_replication_creates_repositories_and_no_repository(
    shared_app: Synthesized,
) -> None:
    manifest = json.loads((shared_app.outdir / "manifest.json").read_text())["artifacts"]

    assert sorted(manifest["EcrMirror"]["dependencies"]) == ["EcrMirror-eu-west-1", "EcrMirror-us-west-2",
                                                             "EcrMirror.assets"]
    for region in REGIONS:
        assert manifest[f"EcrMirror-{region}"]["environment"] == f"aws://unknown-account/{region}"
        kinds = {r["Type"] for r in replica(shared_app, region)["Resources"].values()}
        assert kinds == {"AWS::ECR::RepositoryCreationTemplate"}


def test_a_replica_stack_is_bootstrapped_like_the_home_stack(shared_app: Synthesized) -> None:
    # The default synthesizer: `make bootstrap` covers its region, and a template over CloudFormation's 51,200-byte
    # inline limit (a pull policy per creation template) is uploaded to the bootstrap bucket.
    manifest = json.loads((shared_app.outdir / "manifest.json").read_text())["artifacts"]
    for region in REGIONS:
        properties = manifest[f"EcrMirror-{region}"]["properties"]
        assert properties["assumeRoleArn"].startswith("arn:${AWS::Partition}:iam::${AWS::AccountId}:role/cdk-")
        assert properties["stackTemplateAssetObjectUrl"].startswith(f"s3://cdk-hnb659fds-assets-${{AWS::AccountId}}-{region}/")


def test_the_environment_agnostic_template_refuses_its_own_region_and_another_partition(
    shared_app: Synthesized,
) -> None:
    rules = [rule for name, rule in shared_app.data["Rules"].items() if name.startswith("RegistryReplicationElsewhere")]

    assert [[a["Assert"] for a in rule["Assertions"]] for rule in rules] == [[
        {"Fn::Not": [{"Fn::Contains": [REGIONS, {"Ref": "AWS::Region"}]}]},
        {"Fn::Equals": [{"Ref": "AWS::Partition"}, "aws"]},
    ]]


def test_a_stack_in_a_replica_region_fails_synth_with_one_line(tmp_path: Path) -> None:
    app = cdk_app(tmp_path)

    with pytest.raises(ConfigError) as caught:
        MirrorStack(app, "EcrMirror", config=parse_config(SHARED, origin="shared.yaml"),
                    env=Environment(region="us-west-2"))

    assert str(caught.value) == "shared.yaml: replication.regions[1]: 'us-west-2' is the stack's own region"


def test_the_region_cdk_deploys_an_environment_agnostic_stack_to_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CDK_DEFAULT_REGION", "eu-west-1")

    with pytest.raises(ConfigError) as caught:
        MirrorStack(cdk_app(tmp_path), "EcrMirror", config=parse_config(SHARED, origin="shared.yaml"))

    assert str(caught.value) == ("shared.yaml: replication.regions[0]: 'eu-west-1' is the stack's own region "
                                 "(CDK_DEFAULT_REGION, where cdk deploys it)")


def test_without_replication_there_is_no_replication_configuration_and_no_replica_stack(
    default_app: Synthesized,
) -> None:
    assert not [r for r in default_app.data["Resources"].values() if r["Type"] == "AWS::ECR::ReplicationConfiguration"]
    assert sorted(p.name for p in default_app.outdir.glob("*.template.json")) == ["EcrMirror.template.json"]


# --- every replica region is checked against stacks/regions.py and the home stack's partition -----------------


def replicating(*regions: str, **config: Any) -> Any:
    return parse_config({**SHARED, "replication": {"regions": list(regions)}, **config}, origin="shared.yaml")


def refusal(tmp_path: Path, config: Any, **stack: Any) -> str:
    """The one line app.build refuses the config with; no replica stack was made, nothing written to the assembly."""
    app = cdk_app(tmp_path / "cdk.out")
    with pytest.raises(ConfigError) as caught:
        if stack:
            MirrorStack(app, "EcrMirror", config=config, **stack)
        else:
            build(app, config)
    assert [child.node.id for child in app.node.children if child.node.id.startswith("EcrMirror-")] == []
    assert not any((tmp_path / "cdk.out").glob("*"))
    return str(caught.value)


@pytest.mark.parametrize("region", ["us-east-9", "zz-nowhere-1"])
def test_a_region_that_does_not_exist_is_refused_before_any_replica_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, region: str,
) -> None:
    monkeypatch.delenv("CDK_DEFAULT_REGION", raising=False)

    assert refusal(tmp_path, replicating("eu-west-1", region)) == (
        f"shared.yaml: replication.regions[1]: {region!r} is not a region with ECR in partition aws or aws-cn "
        "(stacks/regions.py lists them)")


def test_a_china_replica_of_a_home_region_cdk_deploys_to_in_aws_is_refused_at_synth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CDK_DEFAULT_REGION", "us-east-1")

    assert refusal(tmp_path, replicating("cn-north-1", pull_through_cache=[])) == (
        "shared.yaml: replication.regions[0]: 'cn-north-1' is in partition aws-cn, the stack's region 'us-east-1' "
        "(CDK_DEFAULT_REGION, where cdk deploys it) in aws; ECR replicates within one partition")


def test_a_replica_in_another_partition_than_the_stacks_own_region_is_refused(tmp_path: Path) -> None:
    config = replicating("cn-northwest-1", pull_through_cache=[])

    assert refusal(tmp_path, config, env=Environment(region="eu-west-1")) == (
        "shared.yaml: replication.regions[0]: 'cn-northwest-1' is in partition aws-cn, the stack's region "
        "'eu-west-1' in aws; ECR replicates within one partition")


def test_with_cache_rules_a_china_replica_is_refused_even_where_the_home_region_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CDK_DEFAULT_REGION", raising=False)

    assert refusal(tmp_path, replicating("cn-north-1")) == (
        "shared.yaml: replication.regions[0]: 'cn-north-1' is in partition aws-cn; with pull_through_cache rules "
        "the mirror stack deploys to aws only, and ECR replicates within one partition")


def test_a_china_mirror_without_cache_rules_replicates_to_the_other_china_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CDK_DEFAULT_REGION", "cn-north-1")
    app = cdk_app(tmp_path)

    build(app, replicating("cn-northwest-1", pull_through_cache=[]))
    app.synth()

    manifest = json.loads((tmp_path / "manifest.json").read_text())["artifacts"]
    assert manifest["EcrMirror-cn-northwest-1"]["environment"] == "aws://unknown-account/cn-northwest-1"
