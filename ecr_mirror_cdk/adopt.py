"""Existing CodeBuild projects adopt the mirror in one call: IAM, environment, and the setup step first.

In any CDK app with this repository on PYTHONPATH. Same account, coordinates from the mirror's SSM contract:

    adoption = MirrorAdoption(stack, "Mirror")
    adoption.adopt(project)        # or adoption.adopt_all(stack): every CodeBuild project under it, nested stacks too

Another account: `MirrorAdoption(stack, "Mirror", registry_uri=..., mirror_map=...)`, from the mirror stack's
outputs RegistryUri and MirrorMap. In a replica region, registry_uri is the local copy and `home_registry_uri`
the mirror's own registry, which serves what replication has not brought yet. In a region with no replica,
registry_uri is the mirror's own registry in its region: the builds pull across regions, and synth warns once
with what that costs and how a replica avoids it.

An inline buildspec gets ecr_mirror_cdk/buildspec.py's SETUP_LINE before its own install commands and is otherwise
unchanged (adopt_buildspec.py); a buildspec kept in the source gets IAM and environment, and an info
annotation names the line to add. A runner project (GitHub Actions, GitLab, Buildkite) gets an inline buildspec
if it has none. The changes go into the L1 properties, so a team's escape-hatch overrides still apply on top;
one that replaces what adoption set fails synth with a line saying what to add (adopt_check.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import jsii
from aws_cdk import (
    Acknowledgment,
    Annotations,
    Aspects,
    IAspect,
    IResolvable,
    IResolveContext,
    Stack,
    Stage,
    Token,
    Validations,
)
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_ssm as ssm
from constructs import Construct, IConstruct

from . import adopt_buildspec as buildspec
from . import constants
from .adopt_buildspec import MIRROR_VARIABLES, BuildSpecError
from .adopt_check import AdoptionCheck
from .build import PULL_THROUGH_ACTIONS, nag_text, setup_folder
from .buildspec import SETUP_LINE
from .contract import pull_repositories, repository_arns

__all__ = ["MIRROR_VARIABLES", "AdoptionError", "MirrorAdoption"]

_ECR_HOST = re.compile(r"(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)"
                       r"\.amazonaws\.com(?:\.cn)?")
# Construct metadata on each adopted project, naming the adoption.
_ADOPTED_BY = "ecr-mirror:adopted-by"
_CROSS_REGION = "ecr-mirror:cross-region"
ECR_PRICING = "https://aws.amazon.com/ecr/pricing/"
# Runner projects run buildspec commands only in INSTALL, PRE_BUILD and POST_BUILD, only from an inline buildspec,
# and only for jobs labelled buildspec-override:true (CodeBuild user guide, "Run buildspec commands for the
# INSTALL, PRE_BUILD, and POST_BUILD phases"; "Label overrides supported with the CodeBuild-hosted GitHub
# Actions runner"). They are the projects whose webhook takes WORKFLOW_JOB_QUEUED events (GitHub Actions and
# GitLab: "GitHub webhook events", "GitLab webhook events") or builds RUNNER_BUILDKITE_BUILD (API Webhook.buildType).
_RUNNER_EVENT = "WORKFLOW_JOB_QUEUED"
_RUNNER_BUILD_TYPE = "RUNNER_BUILDKITE_BUILD"
_RUNNER_SPEC = {"version": "0.2"}


class AdoptionError(ValueError):
    """A project or coordinate the mirror cannot adopt; the message names it."""


@dataclass
class _Project:
    """What adoption read from a project's L1 properties before changing them."""

    environment: dict[str, Any]
    inline: bool  # the buildspec is inline (or a runner's new one): the setup line goes in
    where: str  # where the buildspec is, when it is not inline
    runner: bool


@jsii.implements(IAspect)
class MirrorAdoption(Construct):
    """Gives CodeBuild projects of this stack (and its nested stacks) the mirror; as an Aspect, every project under
    a scope."""

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
        stack = Stack.of(self)
        if registry_uri is None or mirror_map is None:  # same account: read at deploy time, in this region
            self.registry_uri = ssm.StringParameter.value_for_string_parameter(self, constants.PARAMETER_REGISTRY_URI)
            self.mirror_map = ssm.StringParameter.value_for_string_parameter(self, constants.PARAMETER_MIRROR_MAP)
            # In a replica region the home registry serves what replication has not brought; at home it is
            # registry-uri itself, which the setup then ignores.
            self.home_registry_uri = ssm.StringParameter.value_for_string_parameter(
                self, constants.PARAMETER_HOME_REGISTRY_URI)
            self.pull_repository_arns = ssm.StringListParameter.value_for_typed_list_parameter(
                self, constants.PARAMETER_PULL_REPOSITORY_ARNS)
        else:
            self.registry_uri, self.mirror_map = registry_uri, mirror_map
            names = checked_repositories(mirror_map)
            _, region = registry_account_region(registry_uri)
            if not Token.is_unresolved(stack.region) and stack.region != region:
                self._warn_cross_region(stack, region)
            # In a replica region the same repositories are pulled, and first filled, at home too.
            registries = [registry_uri] + ([home_registry_uri] if home_registry_uri else [])
            self.pull_repository_arns = repository_arns(self, names, map(registry_account_region, registries))
            self._wildcards = [nag_text(stack.resolve(arn)) for arn in self.pull_repository_arns if arn.endswith("*")]
        self.setup = s3_assets.Asset(self, "SetupMirror", path=str(setup_folder(self) / constants.SETUP_KEY))
        self._check = AdoptionCheck()
        Validations.of(cast(Stage, Stage.of(self))).add_plugins(self._check)

    def _warn_cross_region(self, stack: Stack, region: str) -> None:
        # ECR serves pulls from any region; across regions they are billed: "Data transferred between Amazon ECR and
        # other services in different Regions will be charged at Internet Data Transfer rates on both sides of the
        # transfer" (AWS Containers Blog, "Understanding data transfer costs for AWS container services"; rates on
        # the Amazon ECR pricing page). A replica in the builds' region is pulled in-region instead.
        Annotations.of(self).add_warning_v2(_CROSS_REGION, (
            f"MirrorAdoption: stack {stack.node.path} is in {stack.region}, the mirror's registry_uri in {region}: "
            f"every pull crosses from {region} to {stack.region}, which AWS bills as inter-region data transfer at "
            f"both ends ({ECR_PRICING}); to pull in-region, add {stack.region} to replication.regions in the "
            f"mirror's mirror.yaml and adopt with that replica's registry_uri and home_registry_uri"))

    @property
    def variables(self) -> list[dict[str, Any]]:
        """The project variables adoption adds, as CloudFormation's EnvironmentVariables: for a team whose own
        escape-hatch override sets that property, to include them."""
        mirror = {"MIRROR_REGISTRY": self.registry_uri, "MIRROR_MAP": self.mirror_map,
                  "MIRROR_SETUP_BUCKET": self.setup.s3_bucket_name, "MIRROR_SETUP_KEY": self.setup.s3_object_key}
        if self.home_registry_uri:
            mirror["MIRROR_HOME_REGISTRY"] = self.home_registry_uri
        return [{"Name": name, "Type": "PLAINTEXT", "Value": value} for name, value in mirror.items()]

    def adopt(self, project: codebuild.Project, *, runner: bool = False) -> None:
        """The mirror for one project; a project that cannot take it is an AdoptionError naming it. `runner`: a
        CodeBuild-hosted runner project whose webhook is not in this app (made in the console, say)."""
        if adopted_by(project) == self.node.path:
            return
        self._own_stack(project)
        found = self._inspect(project, runner)
        if isinstance(found, str):
            raise AdoptionError(f"{project.node.path}: {found}")
        self._apply(project, found)

    def adopt_all(self, scope: IConstruct) -> None:
        """The mirror for every CodeBuild project under `scope`, at synth; others get an info annotation. A nested
        stack with a MirrorAdoption of its own is left to it."""
        Aspects.of(scope).add(self)

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, codebuild.Project) or adopted_by(node) or not self._own_stack(node):
            return
        found = self._inspect(node, runner=False)
        if isinstance(found, str):
            Annotations.of(node).add_info(f"MirrorAdoption: not adopted: {found}")
            return
        self._apply(node, found)

    def _own_stack(self, project: codebuild.Project) -> bool:
        """True if the project is this adoption's to take: in its stack, or in a nested stack under it with no
        adoption of its own. In another stack it is an AdoptionError (the asset and SSM lookups live in one)."""
        own, stack = Stack.of(self), Stack.of(project)
        while stack.node.path != own.node.path:
            parent = stack.nested_stack_parent
            if parent is None:
                raise AdoptionError(f"{project.node.path}: in stack {Stack.of(project).node.path}, not under "
                                    f"{own.node.path}: create a MirrorAdoption in that stack")
            if any(isinstance(child, MirrorAdoption) for child in stack.node.children):
                return False
            stack = parent
        return True

    def _inspect(self, project: codebuild.Project, runner: bool) -> _Project | str:
        """What adoption needs from the project, or why it cannot take it."""
        if adopted_by(project):
            return f"already adopted by {adopted_by(project)}"
        cfn = _cfn(project)
        stack = Stack.of(project)
        environment = stack.resolve(cfn.environment)
        if environment.get("privilegedMode") is not True and not environment.get("dockerServer"):
            return "not privileged: the setup restarts dockerd, which runs only in privileged mode on CodeBuild"
        taken = sorted({v["name"] for v in environment.get("environmentVariables") or []} & set(MIRROR_VARIABLES))
        if taken:
            return f"already sets {', '.join(taken)}"
        if project.role is None:
            return "has no service role to grant the mirror to"
        runner = runner or is_runner(stack.resolve(cfn.triggers))
        source = stack.resolve(cfn.source)
        spec = source.get("buildSpec")
        try:
            inline = buildspec.read(spec) is not None
        except BuildSpecError as error:
            return str(error)
        if spec is None:
            where = "the source's buildspec.yml (CodeBuild's default)"
        else:
            where = f"{spec} in the source" if isinstance(spec, str) else "a file outside the template"
        if runner and not inline and spec is not None:
            return (f"a runner project with its buildspec in {where.removesuffix(' in the source')}: CodeBuild runs "
                    "a runner's buildspec commands only from an inline buildspec; give it one, or none")
        return _Project(environment, inline or runner, where, runner)

    def _apply(self, project: codebuild.Project, found: _Project) -> None:
        self._grant(project)
        project.node.add_metadata(_ADOPTED_BY, self.node.path)
        cfn = _cfn(project)
        variables = [{"name": v["Name"], "type": v["Type"], "value": v["Value"]} for v in self.variables]
        own_environment = cfn.environment
        cfn.environment = _at_synth(lambda context: {
            **context.resolve(own_environment),
            "environmentVariables": [*(context.resolve(own_environment).get("environmentVariables") or []),
                                     *context.resolve(variables)]})
        self._check.expect(project, [v["name"] for v in variables], inline=found.inline)
        if found.environment.get("dockerServer"):
            Annotations.of(project).add_warning_v2("ecr-mirror:docker-server", (
                "MirrorAdoption: a Docker server project: the remote daemon's own pulls (docker pull, docker build "
                "on the server) do not come through the mirror; the setup line still configures buildx builders"))
        if found.runner:
            Annotations.of(project).add_info("MirrorAdoption: a runner project: CodeBuild runs the setup (its "
                                             "install phase) only for jobs labelled buildspec-override:true")
        if not found.inline:
            Annotations.of(project).add_info(
                f"MirrorAdoption: the buildspec is {found.where}, where CDK cannot add a step: make this the first "
                f"command of phases.install.commands: {SETUP_LINE}")
            return
        own_source = cfn.source

        def source(context: IResolveContext) -> Any:
            resolved = context.resolve(own_source)
            spec = resolved.get("buildSpec")
            if spec is None:  # a runner project without a buildspec: CodeBuild reads the source's file for none
                spec = json.dumps(buildspec.added(_RUNNER_SPEC, SETUP_LINE), indent=2)
            elif not context.preparing:  # while CDK looks for cross-stack references the text is not final
                spec = buildspec.with_setup(spec, SETUP_LINE)
            return {**resolved, "buildSpec": spec}

        cfn.source = _at_synth(source)

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
            reasons[arn] = ("The mirror's repositories under one prefix: a cache rule's, which a pull creates on first "
                            "use, or the direct copies at their default location; the names are the images pulled.")
        for resource, reason in reasons.items():
            finding = f"AwsSolutions-IAM5[Resource::{resource}]"
            Validations.of(role).acknowledge(Acknowledgment(id=finding, reason=reason))


def adopted_by(project: codebuild.Project) -> str | None:
    """The path of the MirrorAdoption that adopted the project, if one did."""
    return next((str(entry.data) for entry in project.node.metadata if entry.type == _ADOPTED_BY), None)


def is_runner(triggers: dict[str, Any] | None) -> bool:
    """A CodeBuild-hosted runner project, from its resolved L1 Triggers."""
    triggers = triggers or {}
    events = {event.strip() for group in triggers.get("filterGroups") or [] for f in group
              if f.get("type") == "EVENT" for event in str(f.get("pattern", "")).split(",")}
    return _RUNNER_EVENT in events or triggers.get("buildType") == _RUNNER_BUILD_TYPE


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


def _cfn(project: codebuild.Project) -> codebuild.CfnProject:
    return cast(codebuild.CfnProject, project.node.default_child)


def _at_synth(produce: Callable[[IResolveContext], Any]) -> IResolvable:
    return cast(IResolvable, _AtSynth(produce))


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
