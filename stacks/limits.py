"""CloudFormation's template limits, checked at synth: a stack over one stops with one line, not a failed deploy.

Limits (CloudFormation User Guide, "Understand CloudFormation quotas"): 500 resources, 200 outputs and 200
parameters per template, and a template body of 1 MB in an S3 object (the CDK CLI uploads each template to the
bootstrap bucket). Counted before synth from the constructs, plus what CDK adds while it synthesizes: the
CDKMetadata resource when version reporting is on (the CLI's default, context `aws:cdk:version-reporting`) and the
BootstrapVersion parameter of the default synthesizer. CDK's own check of the resource count ends in a jsii
traceback; this one comes first. The body size is known only once the template is written (`check_templates`).
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, CfnParameter, CfnResource, DefaultStackSynthesizer, Stack
from constructs import Construct

from ecr_mirror_cdk.config import ConfigError

MAX_RESOURCES = 500
MAX_OUTPUTS = 200
MAX_PARAMETERS = 200
MAX_TEMPLATE_BYTES = 1_000_000  # "1 MB", taken at its smallest
# cx-api's ANALYTICS_REPORTING_ENABLED_CONTEXT (not exported to Python): the CLI sets it unless --no-version-reporting.
VERSION_REPORTING = "aws:cdk:version-reporting"


def counts(stack: Stack) -> dict[str, int]:
    """Resources, outputs and parameters the stack's template will declare."""
    own = [node for node in stack.node.find_all() if Stack.of(node) is stack]
    reporting = bool(stack.node.try_get_context(VERSION_REPORTING))
    return {
        "resources": sum(isinstance(node, CfnResource) for node in own) + int(reporting and not stack.nested),
        "outputs": sum(isinstance(node, CfnOutput) for node in own),
        "parameters": sum(isinstance(node, CfnParameter) for node in own)
        + int(isinstance(stack.synthesizer, DefaultStackSynthesizer)),
    }


def check_counts(scope: Construct, origin: str) -> None:
    """Every stack under `scope` within CloudFormation's counts, or one ConfigError line naming the first that is
    not: before synth, so nothing is written."""
    limits = {"resources": MAX_RESOURCES, "outputs": MAX_OUTPUTS, "parameters": MAX_PARAMETERS}
    for stack in (node for node in scope.node.find_all() if isinstance(node, Stack)):
        for kind, count in counts(stack).items():
            if count > limits[kind]:
                raise ConfigError(f"{origin}: stack {stack.stack_name} would declare {count} {kind}, over "
                                  f"CloudFormation's {limits[kind]} per stack: {_advice(kind)}")


def check_templates(outdir: str | Path, origin: str) -> None:
    """Every template the synth wrote within the body size CloudFormation takes from S3, or one ConfigError line."""
    for path in sorted(Path(outdir).glob("*.template.json")):
        size = path.stat().st_size
        if size > MAX_TEMPLATE_BYTES:
            raise ConfigError(f"{origin}: {path.name} is {size} bytes, over CloudFormation's {MAX_TEMPLATE_BYTES} "
                              f"(1 MB) per template: {_advice('bytes')}")


def _advice(kind: str) -> str:
    # What grows with the config: a creation template per parent of a `target` elsewhere, each carrying the
    # sharing policy; everything else is one resource however many images.
    return {"resources": "give targets outside repositories.prefix fewer parent paths (each has its own creation "
                         "template), or leave their target out",
            "bytes": "give targets outside repositories.prefix fewer parent paths, or share with the organization "
                     "(sharing.organization_id) instead of many accounts"}.get(kind, "split the config")
