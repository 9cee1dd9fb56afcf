"""SSM parameters: the contract consumers read and the spec the planner reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk import Stack
from aws_cdk import aws_codebuild as codebuild
from aws_cdk.assertions import Capture, Template

from ecr_mirror_cdk.config import ConfigError
from ecr_mirror_cdk.config_parse import parse_config, parse_spec
from ecr_mirror_cdk.contract import MirrorContract
from stacks.member import MemberStack, checked_template
from tests.support.cdk import cdk_app

from .conftest import REPO, Synthesized, synthesize

REGISTRY = "${Registry}"


def render(value: Any) -> str:
    """A parameter value with deploy-time parts (the registry host) shown as ${Registry}."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return "".join(render(part) for part in value["Fn::Join"][1])
    assert value == {"Fn::Sub": "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}"}, value
    return REGISTRY


def parameter(app: Synthesized, name: str) -> dict[str, Any]:
    found = app.template.find_resources("AWS::SSM::Parameter", {"Properties": {"Name": name}})
    assert len(found) == 1, name
    return next(iter(found.values()))["Properties"]


def test_the_spec_parameter_holds_the_validated_config_the_lambdas_parse(default_app: Synthesized) -> None:
    spec = parameter(default_app, "/ecr-mirror/spec")
    assert spec["Type"] == "String"
    assert spec["Value"] == default_app.config.to_spec()
    assert parse_spec(spec["Value"]) == default_app.config


def test_the_planner_is_pointed_at_the_spec_parameter(default_app: Synthesized) -> None:
    spec = default_app.logical_id("AWS::SSM::Parameter", Name="/ecr-mirror/spec")
    env = Capture()
    default_app.template.has_resource_properties(
        "AWS::Lambda::Function", {"Handler": "mirror.handlers.planner.handler", "Environment": {"Variables": env}}
    )
    assert env.as_object()["MIRROR_SPEC_PARAMETER"] == {"Ref": spec}


def test_the_registry_uri_is_published(default_app: Synthesized) -> None:
    assert render(parameter(default_app, "/ecr-mirror/registry-uri")["Value"]) == REGISTRY


def test_the_cache_prefixes_are_published_by_upstream_registry(default_app: Synthesized) -> None:
    prefixes = json.loads(parameter(default_app, "/ecr-mirror/pull-through-cache-prefixes")["Value"])
    assert prefixes == {
        "docker.io": "docker-hub",
        "public.ecr.aws": "ecr-public",
        "quay.io": "quay",
        "registry.k8s.io": "k8s",
    }


DEFAULT_MAP = {
    "prefixes": {
        "docker.io": "docker-hub", "public.ecr.aws": "ecr-public", "quay.io": "quay", "registry.k8s.io": "k8s"
    },
    # Images at their default location, mirror/<host>/<path>, are named by their hosts; only other targets are listed.
    "mirror_prefix": "mirror",
    "mirror_hosts": ["docker.io", "gcr.io"],
    "repositories": {"mcr.microsoft.com/dotnet/runtime": "mirror/dotnet-runtime"},
}


def test_the_map_adopted_builds_set_up_the_mirror_with_is_published_and_an_output(default_app: Synthesized) -> None:
    published = parameter(default_app, "/ecr-mirror/mirror-map")
    assert published["Type"] == "String"
    assert json.loads(published["Value"]) == DEFAULT_MAP
    assert json.loads(default_app.data["Outputs"]["MirrorMap"]["Value"]) == DEFAULT_MAP


def arn(value: Any) -> str:
    """One ARN, its partition, region and account shown as ${Partition}, ${Region}, ${Account}."""
    names = {"AWS::Partition": "${Partition}", "AWS::Region": "${Region}", "AWS::AccountId": "${Account}"}
    return "".join(part if isinstance(part, str) else names[part["Ref"]] for part in value["Fn::Join"][1])


def test_the_repositories_builds_may_pull_are_published_as_a_string_list_of_arns(default_app: Synthesized) -> None:
    published = parameter(default_app, "/ecr-mirror/pull-repository-arns")
    assert published["Type"] == "StringList"
    separator, arns = published["Value"]["Fn::Join"]
    repository = "arn:${Partition}:ecr:${Region}:${Account}:repository/"
    assert separator == ","
    assert [arn(value) for value in arns] == [
        f"{repository}docker-hub/*", f"{repository}ecr-public/*", f"{repository}k8s/*", f"{repository}mirror/*",
        f"{repository}quay/*", f"{repository}mirror/dotnet-runtime",
    ]


def test_the_codebuild_project_name_and_arn_are_published(default_app: Synthesized) -> None:
    project = default_app.logical_id("AWS::CodeBuild::Project")
    assert parameter(default_app, "/ecr-mirror/codebuild-project-name")["Value"] == {"Ref": project}
    assert parameter(default_app, "/ecr-mirror/codebuild-project-arn")["Value"] == {"Fn::GetAtt": [project, "Arn"]}


def contract_template(images: list[dict[str, Any]]) -> Template:
    stack = Stack(cdk_app(), "Contract")
    MirrorContract(stack, "Contract", config=parse_config({"images": images}), registry_uri="r", project=None)
    return Template.from_stack(stack)


def many_images(count: int) -> list[dict[str, Any]]:
    """Images whose names share nothing (hex digests), so compression cannot hide their size."""
    return [{"source": f"gcr.io/{hashlib.sha256(str(n).encode()).hexdigest()[:48]}", "tags": ["1.0", "1.1", "latest"]}
            for n in range(count)]


# 600 images of one project, each name partly random: a spec between 4 and 8 KB (gzip and base64 included), which
# a tier chosen by size would make advanced where the default mirror.yaml's is standard.
IMAGES_600 = [{"source": f"gcr.io/org/svc-{n:03d}-{hashlib.sha256(str(n).encode()).hexdigest()[:5]}",
               "tags": ["1.0", "latest"]} for n in range(600)]
ORGANIZATION = {"organization_id": "o-a1b2c3d4e5", "stack_set": {"targets": ["r-a1b2"]}}


def tiers(resources: dict[str, Any]) -> dict[str, str]:
    return {r["Properties"]["Name"]: r["Properties"].get("Tier", "(account default)")
            for r in resources.values() if r["Type"] == "AWS::SSM::Parameter"}


def contract_tiers(raw: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """Every SSM parameter's tier, in the mirror stack's contract (a project's too) and in the member template."""
    config = parse_config({**raw, "sharing": ORGANIZATION})
    stack = Stack(cdk_app(), "Contract")
    project = codebuild.Project(stack, "Build", build_spec=codebuild.BuildSpec.from_object({"version": "0.2"}))
    MirrorContract(stack, "Contract", config=config, registry_uri="r", project=project)
    member = checked_template(MemberStack(cdk_app(tmp_path), "Member", config=config))
    home = Template.from_stack(stack).to_json()["Resources"]
    return {**{f"mirror {k}": v for k, v in tiers(home).items()},
            **{f"member {k}": v for k, v in tiers(member["Resources"]).items()}}


def test_a_parameters_tier_is_the_same_for_600_images_and_the_default_config(tmp_path: Path) -> None:
    default = yaml.safe_load((REPO / "mirror.yaml").read_text())
    assert 4096 < len(parse_config({"images": IMAGES_600}).to_spec()) < 8192

    big = contract_tiers({"images": IMAGES_600}, tmp_path / "big")

    assert big == contract_tiers(default, tmp_path / "default")
    # In the mirror's account what grows with mirror.yaml is advanced from the first deploy; the rest, and every
    # parameter of the member accounts (billed per stack instance), is standard.
    assert {name for name, tier in big.items() if tier == "Advanced"} == {
        "mirror /ecr-mirror/spec", "mirror /ecr-mirror/mirror-map", "mirror /ecr-mirror/pull-repository-arns"}
    assert {tier for name, tier in big.items() if name.startswith("member ")} == {"Standard"}


def test_the_whole_stack_of_600_images_deploys_with_the_default_configs_tiers(
    default_app: Synthesized, tmp_path: Path,
) -> None:
    big = synthesize(parse_config({"images": IMAGES_600}, origin="600.yaml"), tmp_path)

    assert len(big.data["Resources"]) < 500
    assert tiers(big.data["Resources"]) == tiers(default_app.data["Resources"])


def test_a_spec_over_8_kb_fails_synth_naming_the_parameter_and_the_limit() -> None:
    with pytest.raises(ConfigError, match=r"SSM parameter /ecr-mirror/\w+: \d+ bytes, over the 8192-byte limit"):
        contract_template(many_images(400))
