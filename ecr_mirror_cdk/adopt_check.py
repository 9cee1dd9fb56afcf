"""After synth, each adopted project's template still runs the setup line and has the MIRROR_ variables.

Adoption writes into the L1 properties; an escape-hatch override (add_property_override, add_override) is merged
over the rendered properties (aws/aws-cdk PR 2685, "apply overrides after rendering properties"), and CDK keeps
overrides private (CfnResource.rawOverrides is not in its jsii API), so adoption cannot build on one. An override
that replaces the buildspec or the variables therefore keeps the team's values, and this check, a policy
validation plugin, fails synth with one line per project saying what to add.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import jsii
from aws_cdk import (
    CfnResource,
    IPolicyValidationContext,
    IPolicyValidationPlugin,
    PolicyValidationPluginReport,
    PolicyViolatingResource,
    PolicyViolation,
    Stack,
)
from aws_cdk import aws_codebuild as codebuild

from . import adopt_buildspec as buildspec
from .adopt_buildspec import BuildSpecError
from .buildspec import SETUP_LINE, SETUP_PLACE


@jsii.implements(IPolicyValidationPlugin)
class AdoptionCheck:
    """A policy validation plugin (Validations.add_plugins) over the synthesized templates: a violation per
    adopted project whose template lost the setup line or a MIRROR_ variable."""

    def __init__(self) -> None:
        self._expected: list[tuple[codebuild.Project, list[str], bool]] = []

    @property
    def name(self) -> str:
        return "MirrorAdoption"

    @property
    def version(self) -> str | None:
        return None

    @property
    def rule_ids(self) -> list[str] | None:
        return None

    def expect(self, project: codebuild.Project, variables: list[str], *, inline: bool) -> None:
        self._expected.append((project, variables, inline))

    def validate(self, context: IPolicyValidationContext) -> PolicyValidationPluginReport:
        templates = {t.stack_construct_path: Path(t.template_path) for t in context.stack_templates}
        read: dict[Path, dict[str, Any]] = {}
        violations = []
        for project, variables, inline in self._expected:
            stack = root = Stack.of(project)
            while root.nested_stack_parent is not None:
                root = root.nested_stack_parent
            if root.node.path not in templates:
                continue
            path = templates[root.node.path].with_name(stack.template_file)
            logical_id = str(stack.resolve(cast(CfnResource, project.node.default_child).logical_id))
            if path not in read:
                read[path] = json.loads(path.read_text())
            properties = read[path]["Resources"][logical_id]["Properties"]
            for rule, problem in _lost(properties, variables, inline):
                violations.append(PolicyViolation(
                    rule_name=rule, description=f"{project.node.path}: {problem}",
                    violating_resources=[PolicyViolatingResource(
                        resource_logical_id=logical_id, template_path=str(path),
                        locations=[f"Properties.{rule}"])]))
        return PolicyValidationPluginReport(success=not violations, violations=violations)


def _lost(properties: dict[str, Any], variables: list[str], inline: bool) -> list[tuple[str, str]]:
    """What an override took from an adopted project: (property, what to do) pairs."""
    lost = []
    names = {v.get("Name") for v in properties.get("Environment", {}).get("EnvironmentVariables") or []}
    missing = [name for name in variables if name not in names]
    if missing:
        lost.append(("Environment.EnvironmentVariables", f"an override of Environment.EnvironmentVariables drops "
                     f"{', '.join(missing)}: add MirrorAdoption.variables to it"))
    spec = properties.get("Source", {}).get("BuildSpec")
    try:
        now_inline = buildspec.read(spec) is not None
    except BuildSpecError:
        now_inline = True
    if (inline or now_inline) and not buildspec.runs_first(spec, SETUP_LINE):
        lost.append(("Source.BuildSpec", "an override of Source.BuildSpec does not run the setup line: make this "
                     f"{SETUP_PLACE}: {SETUP_LINE}"))
    return lost
