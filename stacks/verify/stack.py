"""`make verify`'s checks of the stack itself: it runs this config, its cache rules log in upstream, and the
Docker Hub secret holds a token."""

from __future__ import annotations

from typing import Any

from ecr_mirror_cdk.config import Config, ConfigError
from ecr_mirror_cdk.config_parse import parse_spec
from ecr_mirror_cdk.reference import DOCKER_HUB
from lambdas.mirror.aws.ecr import PLACEHOLDER, registry_credentials
from lambdas.mirror.oci.errors import CredentialsError

from .checks import Check, code, error
from .clients import client

STACK_NAME = "EcrMirror"  # ecr_mirror_cdk.constants.STACK_NAME (importing it would start the CDK's Node.js)
SPEC_PARAMETER = "/ecr-mirror/spec"  # ecr_mirror_cdk.constants.PARAMETER_SPEC, the config the planner reads


class StackMissing(Exception):
    pass


def stack_outputs(cloudformation: Any = None, stack_name: str = STACK_NAME) -> dict[str, str]:
    """The deployed stack's outputs; StackMissing with the fix when it is not there or not usable."""
    from botocore.exceptions import ClientError

    cloudformation = client("cloudformation", cloudformation)
    region = cloudformation.meta.region_name
    try:
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    except ClientError as err:
        if "does not exist" in error(err):  # ValidationError: Stack with id EcrMirror does not exist
            raise StackMissing(f"{stack_name} is not deployed in {region}: make deploy (or set AWS_REGION "
                               "to the stack's region)") from err
        raise
    status = stack["StackStatus"]
    if status.endswith("_IN_PROGRESS"):
        raise StackMissing(f"{stack_name} is {status}: wait for it to finish, then run make verify again")
    if not status.endswith("_COMPLETE") or status in ("ROLLBACK_COMPLETE", "DELETE_COMPLETE"):
        raise StackMissing(f"{stack_name} is {status}: see its events (aws cloudformation describe-stack-events "
                           f"--stack-name {stack_name}), fix the cause and make deploy")
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def check_stack(config: Config, ssm: Any = None, stack_name: str = STACK_NAME) -> Check:
    """The stack runs this config: the spec it stored for the planner is this file's."""
    ssm = client("ssm", ssm)
    region = ssm.meta.region_name
    from botocore.exceptions import ClientError

    try:
        deployed = ssm.get_parameter(Name=SPEC_PARAMETER)["Parameter"]["Value"]
    except ClientError as err:
        if code(err) != "ParameterNotFound":
            raise
        return Check("stack", False, f"{SPEC_PARAMETER} is missing in {region}: make deploy CONFIG={config.origin}")
    try:
        same = parse_spec(deployed, origin=SPEC_PARAMETER) == config
    except ConfigError:
        same = False
    if not same:
        return Check("stack", False, f"{stack_name} in {region} runs another config than {config.origin} "
                                     f"({SPEC_PARAMETER} differs): make deploy CONFIG={config.origin}")
    return Check("stack", True, f"{stack_name} in {region} runs {config.origin}")


def check_cache_rules(config: Config, ecr: Any = None) -> Check:
    """ECR ValidatePullThroughCacheRule: "for an upstream registry that requires authentication", it reads the
    rule's secret and logs in upstream (ECR API reference); rules without credentials have nothing to validate."""
    rules = config.pull_through_cache
    if not rules:
        return Check("cache rules", True, "none configured (pull_through_cache: [])")
    from botocore.exceptions import ClientError

    ecr = client("ecr", ecr)
    anonymous = [rule.prefix for rule in rules if not rule.credentials_secret]
    passed, problems = [], []
    for rule in rules:
        if not rule.credentials_secret:
            continue
        try:
            answer = ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix=rule.prefix)
        except ClientError as err:
            if code(err) != "PullThroughCacheRuleNotFoundException":
                raise
            problems.append(f"{rule.prefix}: no such rule in this registry (make deploy)")
            continue
        if answer.get("isValid"):
            passed.append(f"{rule.prefix} authenticates to {answer.get('upstreamRegistryUrl', rule.upstream_url)}")
            continue
        fix = ("make docker-hub-token" if rule.registry == DOCKER_HUB
               else f"make registry-token REGISTRY={rule.registry}")
        problems.append(f"{rule.prefix} cannot log in to {rule.upstream_url} with {rule.credentials_secret}: "
                        f"{answer.get('failure') or 'no reason given'}: store a valid token with {fix}")
    if problems:
        return Check("cache rules", False, "; ".join(problems))
    note = f"{', '.join(anonymous)} take{'s' if len(anonymous) == 1 else ''} no credentials" if anonymous else ""
    return Check("cache rules", True, "; ".join(filter(None, ["; ".join(passed), note])))


class _SecretReader:
    """registry_credentials' provider: the secret's string from Secrets Manager, uncached."""

    def __init__(self, secretsmanager: Any) -> None:
        self.client = secretsmanager

    def get(self, name: str, max_age: int = 0) -> str:
        return str(self.client.get_secret_value(SecretId=name)["SecretString"])


def check_docker_hub_secret(config: Config, secretsmanager: Any = None) -> Check:
    """The secret holds a username and token, not the placeholder the stack stores (lambdas.mirror.aws.ecr)."""
    secretsmanager = client("secretsmanager", secretsmanager)
    name = config.docker_hub_credentials.secret_name
    try:
        credentials = registry_credentials(name, registry="Docker Hub", provider=_SecretReader(secretsmanager))
    except CredentialsError as err:
        return Check("Docker Hub token", False, f"{err}: make deploy creates it; store a token with "
                                                "make docker-hub-token")
    if credentials is None:
        return Check("Docker Hub token", False, f"{name} holds no token yet (the placeholder {PLACEHOLDER}): "
                                                "make docker-hub-token")
    return Check("Docker Hub token", True, f"{name} holds a token for {credentials[0]}")

