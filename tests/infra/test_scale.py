"""A mirror of 150 images deploys within ECR's, IAM's, SSM's and CloudFormation's limits; one that cannot fit
stops synth with one line."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import botocore
import pytest
from cfnlint.api import ManualArgs, lint_file

from ecr_mirror_cdk.config import ConfigError, parse_config

from .conftest import Synthesized, synthesize

# What a token becomes at deploy time, at its longest (a 12-digit account, the longest region name).
LONGEST = {"AWS::Partition": "aws-us-gov", "AWS::Region": "ap-southeast-5", "AWS::AccountId": "123456789012",
           "AWS::URLSuffix": "amazonaws.com.cn"}
IAM_ROLE_POLICIES_MAX = 10_240  # IAM: "Role policy size cannot exceed 10,240 characters" (IAM quotas), whitespace aside
SSM_ADVANCED_MAX = 8_192


def ecr_model() -> dict[str, Any]:
    [path] = Path(botocore.__file__).parent.glob("data/ecr/*/service-2.json*")
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return json.loads(raw)["shapes"]


def deployed(value: Any, resources: dict[str, Any]) -> str:
    """A template value as text once deployed, tokens at their longest (a logical id stands in for a name)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return LONGEST.get(value["Ref"], "x" * 64)
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "arn:aws-us-gov:ecr:ap-southeast-5:123456789012:repository/" + "x" * 64
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(deployed(part, resources) for part in parts)
    if isinstance(value, dict) and "Fn::Sub" in value:
        return re.sub(r"\$\{([^}]+)\}", lambda m: LONGEST.get(m.group(1), "x" * 64), value["Fn::Sub"])
    if isinstance(value, list):
        return "[" + ",".join(json.dumps(deployed(v, resources)) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{deployed(v, resources)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@pytest.fixture(scope="module")
def big_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    images = [{"source": f"team{n % 7}/app-{n}", "tags": ["1.0", "latest"]} for n in range(140)]
    images += [{"source": f"gcr.io/project/tool-{n}", "tags": ["v1"]} for n in range(5)]
    images += [{"source": f"ghcr.io/org/svc-{n}", "tags": ["main"], "target": f"services/svc-{n}"} for n in range(5)]
    config = parse_config({"images": images, "replication": {"regions": ["eu-west-1"]}}, origin="big.yaml")
    return synthesize(config, tmp_path_factory.mktemp("big.out"))


def test_150_images_synthesize_and_pass_cfn_lint(big_app: Synthesized) -> None:
    assert len(big_app.config.images) == 150
    for template in sorted(big_app.outdir.glob("*.template.json")):
        matches = lint_file(template, ManualArgs(regions=["us-east-1"]))
        assert [f"{m.rule.id} {m.path_string}: {m.message}" for m in matches if m.rule.id.startswith("E")] == []


def test_150_images_fit_ecrs_scanning_filters_by_botocores_model(big_app: Synthesized) -> None:
    shapes = ecr_model()
    [scanning] = [r["Properties"] for r in big_app.data["Resources"].values()
                  if r["Type"] == "AWS::ECR::RegistryScanningConfiguration"]
    filters = scanning["Rules"][0]["RepositoryFilters"]
    pattern = shapes["ScanningRepositoryFilterValue"]["pattern"]
    assert len(filters) <= shapes["ScanningRepositoryFilterList"]["max"]
    literal = [f["Filter"] for f in filters if isinstance(f["Filter"], str)]
    assert all(re.fullmatch(pattern, name) for name in literal), literal
    assert "mirror/*" in literal and "services/svc-0" in literal


def test_150_images_keep_every_role_policy_and_ssm_parameter_within_their_limits(big_app: Synthesized) -> None:
    resources = big_app.data["Resources"]
    per_role: dict[str, int] = {}
    for resource in resources.values():
        if resource["Type"] == "AWS::IAM::Policy":
            size = len(deployed(resource["Properties"]["PolicyDocument"], resources))
            for role in resource["Properties"].get("Roles", []):
                per_role[json.dumps(role)] = per_role.get(json.dumps(role), 0) + size
    assert per_role and max(per_role.values()) <= IAM_ROLE_POLICIES_MAX, per_role
    for resource in resources.values():
        if resource["Type"] == "AWS::SSM::Parameter":
            value = deployed(resource["Properties"]["Value"], resources)
            limit = SSM_ADVANCED_MAX if resource["Properties"].get("Tier") == "Advanced" else 4_096
            assert len(value.encode()) <= limit, resource["Properties"]["Name"]


def test_targets_that_cannot_share_scanning_filters_stop_synth_with_one_line(tmp_path: Path) -> None:
    images = [{"source": f"org{n}/app", "tags": ["1"], "target": f"team{n}"} for n in range(120)]

    with pytest.raises(ConfigError) as raised:
        synthesize(parse_config({"images": images}, origin="many.yaml"), tmp_path)

    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith("many.yaml: images: 120 targets outside repositories.prefix 'mirror' need")
