"""Existing CodeBuild projects adopt the mirror in one call: IAM, environment, and the setup step first.

In any CDK app with this repository on PYTHONPATH. Same account, coordinates from the mirror's SSM contract:

    adoption = MirrorAdoption(stack, "Mirror")
    adoption.adopt(project)        # or adoption.adopt_all(stack): every CodeBuild project under it

Another account: `MirrorAdoption(stack, "Mirror", registry_uri=..., mirror_map=...)`, from the mirror stack's
outputs RegistryUri and MirrorMap. In a replica region, registry_uri is the local copy and `home_registry_uri`
the mirror's own registry, which serves what replication has not brought yet.

An inline buildspec gets stacks/buildspec.py's SETUP_LINE before its own install commands and is otherwise
unchanged; a buildspec kept in the source gets IAM and environment, and an
info annotation names the line to add.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, cast

import jsii
import yaml
from aws_cdk import (
    Acknowledgment,
    Annotations,
    Aspects,
    IAspect,
    IResolvable,
    IResolveContext,
    Stack,
    Token,
    Validations,
)
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_ssm as ssm
from constructs import Construct, IConstruct

from . import constants
from .build import PULL_THROUGH_ACTIONS, SETUP_MODULE, nag_text
from .buildspec import SETUP_LINE
from .contract import pull_repositories, repository_arns

MIRROR_VARIABLES = ("MIRROR_REGISTRY", "MIRROR_MAP", "MIRROR_SETUP_BUCKET", "MIRROR_SETUP_KEY",
                    "MIRROR_HOME_REGISTRY")
_ECR_HOST = re.compile(r"(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)"
                       r"\.amazonaws\.com(?:\.cn)?")
# Stands in for a CloudFormation intrinsic inside the buildspec's text while it is parsed; letters and digits
# only, so JSON and YAML read it as part of a string wherever it sits.
_MARKER = "MIRRORTOKEN{}X"
_MARKERS = re.compile(r"MIRRORTOKEN(\d+)X")
# Construct metadata on each adopted project, naming the adoption (the overrides it adds cannot be read back).
_ADOPTED_BY = "ecr-mirror:adopted-by"


class AdoptionError(ValueError):
    """A project or coordinate the mirror cannot adopt; the message names it."""


@jsii.implements(IAspect)
class MirrorAdoption(Construct):
    """Gives CodeBuild projects of this stack the mirror; as an Aspect, every project under a scope."""

    def __init__(self, scope: Construct, construct_id: str, *, registry_uri: str | None = None,
                 mirror_map: str | None = None, home_registry_uri: str | None = None) -> None:
        super().__init__(scope, construct_id)
        if (registry_uri is None) != (mirror_map is None):
            raise AdoptionError("MirrorAdoption: give registry_uri and mirror_map (another account), or neither (SSM)")
        if home_registry_uri is not None and registry_uri is None:
            raise AdoptionError("MirrorAdoption: home_registry_uri goes with registry_uri and mirror_map (a replica "
                                "region has no SSM contract of its own)")
        self.home_registry_uri = home_registry_uri
        self._wildcards: list[str] = []
        if registry_uri is None or mirror_map is None:  # same account: read at deploy time
            self.registry_uri = ssm.StringParameter.value_for_string_parameter(self, constants.PARAMETER_REGISTRY_URI)
            self.mirror_map = ssm.StringParameter.value_for_string_parameter(self, constants.PARAMETER_MIRROR_MAP)
            self.pull_repository_arns = ssm.StringListParameter.value_for_typed_list_parameter(
                self, constants.PARAMETER_PULL_REPOSITORY_ARNS)
        else:
            stack = Stack.of(self)
            self.registry_uri, self.mirror_map = registry_uri, mirror_map
            names = checked_repositories(mirror_map)
            # In a replica region the same repositories are pulled, and first filled, at home too.
            registries = [registry_uri] + ([home_registry_uri] if home_registry_uri else [])
            self.pull_repository_arns = repository_arns(self, names, map(registry_account_region, registries))
            self._wildcards = [nag_text(stack.resolve(arn)) for arn in self.pull_repository_arns if arn.endswith("*")]
        self.setup = s3_assets.Asset(self, "SetupMirror", path=str(SETUP_MODULE))

    def adopt(self, project: codebuild.Project) -> None:
        """The mirror for one project; a project that cannot take it is an AdoptionError naming it."""
        if adopted_by(project) == self.node.path:
            return
        refusal = self._refusal(project)
        if refusal:
            raise AdoptionError(f"{project.node.path}: {refusal}")
        self._apply(project)

    def adopt_all(self, scope: IConstruct) -> None:
        """The mirror for every CodeBuild project under `scope`, at synth; others get an info annotation."""
        Aspects.of(scope).add(self)

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, codebuild.Project) or adopted_by(node) == self.node.path:
            return
        refusal = self._refusal(node)
        if refusal:
            Annotations.of(node).add_info(f"MirrorAdoption: not adopted: {refusal}")
            return
        self._apply(node)

    def _refusal(self, project: codebuild.Project) -> str | None:
        stack, own = Stack.of(project), Stack.of(self)
        if stack.node.path != own.node.path:  # the asset and SSM lookups live in one stack
            raise AdoptionError(f"{project.node.path}: in stack {stack.node.path}, not {own.node.path}: "
                                "create a MirrorAdoption in that stack")
        if adopted_by(project):
            return f"already adopted by {adopted_by(project)}"
        environment = stack.resolve(_cfn(project).environment)
        if environment.get("privilegedMode") is not True:
            return "not privileged: the setup restarts dockerd, which runs only in privileged mode on CodeBuild"
        taken = sorted({v["name"] for v in environment.get("environmentVariables") or []} & set(MIRROR_VARIABLES))
        if taken:
            return f"already sets {', '.join(taken)}"
        if project.role is None:
            return "has no service role to grant the mirror to"
        return None

    def _apply(self, project: codebuild.Project) -> None:
        self._grant(project)
        project.node.add_metadata(_ADOPTED_BY, self.node.path)
        cfn = _cfn(project)
        mirror = {"MIRROR_REGISTRY": self.registry_uri, "MIRROR_MAP": self.mirror_map,
                  "MIRROR_SETUP_BUCKET": self.setup.s3_bucket_name, "MIRROR_SETUP_KEY": self.setup.s3_object_key}
        if self.home_registry_uri:
            mirror["MIRROR_HOME_REGISTRY"] = self.home_registry_uri
        own_environment = cfn.environment
        cfn.add_property_override("Environment.EnvironmentVariables", _AtSynth(lambda context: [
            *_variables(context.resolve(own_environment)),
            *({"Name": name, "Type": "PLAINTEXT", "Value": context.resolve(value)} for name, value in mirror.items()),
        ]))
        source = cfn.source
        own_spec = source.build_spec if isinstance(source, codebuild.CfnProject.SourceProperty) else None
        resolved = Stack.of(project).resolve(own_spec) if own_spec is not None else None
        if resolved is not None and inline_spec(resolved) is not None:
            def spec(context: IResolveContext) -> Any:
                # While CDK looks for cross-stack references the text is not final: pass it through then.
                return context.resolve(own_spec) if context.preparing else with_setup(context.resolve(own_spec))

            cfn.add_property_override("Source.BuildSpec", _AtSynth(spec))
            return
        if resolved is None:
            where = "the source's buildspec.yml (CodeBuild's default)"
        elif isinstance(resolved, str):
            where = f"{resolved} in the source"
        else:
            where = "a file outside the template"
        Annotations.of(project).add_info(
            f"MirrorAdoption: the buildspec is {where}, where CDK cannot add a step: make this the first command "
            f"of phases.install.commands: {SETUP_LINE}")

    def _grant(self, project: codebuild.Project) -> None:
        statements = [
            iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            # A pull through a cache rule creates the repository and imports the image on first use.
            iam.PolicyStatement(actions=PULL_THROUGH_ACTIONS, resources=self.pull_repository_arns),
            iam.PolicyStatement(actions=["s3:GetObject"],
                                resources=[self.setup.bucket.arn_for_objects(self.setup.s3_object_key)]),
        ]
        role = cast(iam.IRole, project.role)
        if not all(role.add_to_principal_policy(statement).statement_added for statement in statements):
            raise AdoptionError(f"{project.node.path}: its role takes no policies (imported immutable): grant "
                                "ecr:GetAuthorizationToken, the mirror's pulls and s3:GetObject on the setup module")
        reasons = {"*": "ecr:GetAuthorizationToken has no resource-level permissions."}
        for arn in self._wildcards:
            reasons[arn] = ("A pull through the mirror's cache rule creates the repository under its prefix on first "
                            "pull; the names are the images the build pulls.")
        for resource, reason in reasons.items():
            finding = f"AwsSolutions-IAM5[Resource::{resource}]"
            Validations.of(role).acknowledge(Acknowledgment(id=finding, reason=reason))


def adopted_by(project: codebuild.Project) -> str | None:
    """The path of the MirrorAdoption that adopted the project, if one did."""
    return next((str(entry.data) for entry in project.node.metadata if entry.type == _ADOPTED_BY), None)


def registry_account_region(registry_uri: str) -> tuple[str, str]:
    match = _ECR_HOST.fullmatch(registry_uri)
    if not match:
        raise AdoptionError(f"MirrorAdoption: registry_uri must be ACCOUNT.dkr.ecr.REGION.amazonaws.com, "
                            f"got {registry_uri!r}")
    return match["account"], match["region"]


def checked_repositories(mirror_map: str) -> list[str]:
    """The repositories a mirror_map lets builds pull, once it reads as the mirror stack's MirrorMap output."""
    try:
        parsed = json.loads(mirror_map)
        valid = isinstance(parsed, dict) and all(
            isinstance(parsed.get(key), dict) and all(isinstance(v, str) for v in parsed[key].values())
            for key in ("prefixes", "repositories"))
    except ValueError:
        valid = False
    if not valid:
        raise AdoptionError('MirrorAdoption: mirror_map must be the mirror stack\'s MirrorMap output, '
                            f'{{"prefixes": {{...}}, "repositories": {{...}}}}, got {mirror_map[:80]!r}')
    return pull_repositories(mirror_map)


def inline_spec(resolved: Any) -> dict[str, Any] | None:
    """The buildspec object, if the project's BuildSpec is inline (JSON or YAML); None for a file name or ARN."""
    text, _ = _with_markers(resolved)
    if text is None:
        return None
    try:
        spec = json.loads(text)
    except ValueError:
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError:
            return None
    return spec if isinstance(spec, dict) else None


def with_setup(resolved: Any) -> Any:
    """The resolved BuildSpec with SETUP_LINE first in install (created if absent), as JSON; intrinsics kept."""
    spec = inline_spec(resolved)
    _, intrinsics = _with_markers(resolved)
    assert spec is not None  # adopt() only rewrites inline buildspecs
    phases = spec.get("phases") or {}
    install = dict(phases.get("install") or {})
    install["commands"] = [SETUP_LINE, *(install.get("commands") or [])]
    spec["phases"] = {"install": install, **{name: phase for name, phase in phases.items() if name != "install"}}
    pieces = _MARKERS.split(json.dumps(spec, indent=2, ensure_ascii=False))
    parts = [intrinsics[int(piece)] if i % 2 else piece for i, piece in enumerate(pieces)]
    return pieces[0] if len(pieces) == 1 else {"Fn::Join": ["", [part for part in parts if part != ""]]}


def _with_markers(resolved: Any) -> tuple[str | None, list[Any]]:
    """The BuildSpec as text with a marker per intrinsic (CDK renders specs holding tokens as an Fn::Join)."""
    if isinstance(resolved, str):
        separator, parts = "", [resolved]
    elif isinstance(resolved, dict) and list(resolved) == ["Fn::Join"]:
        separator, parts = resolved["Fn::Join"]
    else:
        return None, []  # a whole-value intrinsic (a parameter, say): nothing to read
    intrinsics = [part for part in parts if not isinstance(part, str)]
    if any(_MARKERS.search(part) for part in parts if isinstance(part, str)):
        raise AdoptionError(f"MirrorAdoption: the buildspec holds the text {_MARKER.format('N')!r}, which adoption "
                            "uses as a placeholder")
    markers = iter(range(len(intrinsics)))
    text = separator.join(part if isinstance(part, str) else _MARKER.format(next(markers)) for part in parts)
    return text, intrinsics


def _variables(environment: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's own variables as CloudFormation spells them."""
    return [{"Name": v["name"], "Type": v.get("type", "PLAINTEXT"), "Value": v["value"]}
            for v in environment.get("environmentVariables") or []]


def _cfn(project: codebuild.Project) -> codebuild.CfnProject:
    return cast(codebuild.CfnProject, project.node.default_child)


@jsii.implements(IResolvable)
class _AtSynth:
    """A value computed as the template is rendered, so the project's own tokens (cross-stack references too)
    resolve as they would without the mirror. Not Lazy.any: its Python producer was handed no context (2.275)."""

    def __init__(self, produce: Callable[[IResolveContext], Any]) -> None:
        self._produce = produce

    @property
    def creation_stack(self) -> list[str]:
        return []

    def resolve(self, context: IResolveContext) -> Any:
        return self._produce(context)

    def to_string(self) -> str:
        return Token.as_string(self)
