"""Every synth is a security and lint check: cdk-nag AwsSolutions, cfn-lint, acknowledgments with reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import aws_sqs as sqs
from cfnlint.api import ManualArgs, lint_file

from app import build
from ecr_mirror_cdk.config_parse import load_config
from tests.support.cdk import cdk_app

from .conftest import REPO, STACK, Synthesized


def acknowledgments(app: Synthesized) -> dict[str, dict[str, str]]:
    """Construct path → {finding id: reason}, as recorded in the cloud assembly."""
    metadata = json.loads((app.outdir / f"{STACK}.metadata.json").read_text())
    return {
        path: entry["data"]
        for path, entries in metadata.items()
        for entry in entries
        if entry["type"] == "aws:cdk:acknowledged-rules"
    }


def test_cdk_nag_reports_no_unacknowledged_finding(default_app: Synthesized, variant_app: Synthesized,
                                                   shared_app: Synthesized) -> None:
    for app in (default_app, variant_app, shared_app):
        report = json.loads((app.outdir / "validation-report.json").read_text())
        assert [r for r in report["pluginReports"] if r["conclusion"] != "success"] == []


def test_an_unacknowledged_finding_fails_synth(tmp_path: Path) -> None:
    # Proves the plugin is wired into the app: a queue without SSL enforcement must stop synth.
    app = cdk_app(tmp_path)
    stack = build(app, load_config(REPO / "mirror.yaml"))
    sqs.Queue(
        stack,
        "Unsafe",
        dead_letter_queue=sqs.DeadLetterQueue(
            queue=sqs.Queue(stack, "UnsafeDlq", enforce_ssl=True), max_receive_count=3
        ),
    )
    with pytest.raises(RuntimeError, match="AwsSolutions-SQS4"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    violations = {
        (v["ruleName"], c["constructPath"])
        for r in report["pluginReports"]
        for v in r["violations"]
        for c in v["violatingConstructs"]
    }
    assert ("AwsSolutions-SQS4", f"{STACK}/Unsafe/Resource") in violations
    assert all(path.startswith(f"{STACK}/Unsafe") for _, path in violations)


def test_every_acknowledgment_is_on_a_construct_below_the_stack_with_a_reason(default_app: Synthesized) -> None:
    found = acknowledgments(default_app)
    assert f"/{STACK}" not in found, "no stack-wide acknowledgment"
    assert found, "the app acknowledges some findings; none recorded means the check is broken"
    for path, rules in found.items():
        for finding, reason in rules.items():
            assert "AwsSolutions-" in finding, (path, finding)
            assert len(reason) >= 40, (path, finding, reason)


def test_wildcard_acknowledgments_name_the_exact_resource(default_app: Synthesized) -> None:
    wildcards = {f for rules in acknowledgments(default_app).values() for f in rules if "IAM5" in f}
    assert wildcards, "the Lambda roles hold prefix-scoped grants"
    assert all(f.split("AwsSolutions-", 1)[1].startswith("IAM5[") for f in wildcards), wildcards


@pytest.mark.parametrize("which", ["default_app", "variant_app", "shared_app"])
def test_cfn_lint_finds_no_errors_in_any_synthesized_template(which: str, request: pytest.FixtureRequest) -> None:
    app: Synthesized = request.getfixturevalue(which)
    templates = sorted(app.outdir.glob("*.template.json"))
    assert templates
    for template in templates:
        matches = lint_file(template, ManualArgs(regions=["us-east-1", "eu-west-1"]))
        errors = [f"{m.rule.id} {m.path_string}: {m.message}" for m in matches if m.rule.id.startswith("E")]
        assert errors == [], template.name
