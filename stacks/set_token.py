"""Store an upstream registry's username and access token in its secret (Docker Hub's by default).

    python -m stacks.set_token --config mirror.yaml [--registry HOST] [--region REGION]
    python -m stacks.set_token --check        # only: are an AWS region and credentials set? (make deploy)
    python -m stacks.set_token --check --secrets --config mirror.yaml   # and do the cache rules' secrets exist?

Reads the username from the first line of stdin and the token from the second (or prompts on a
terminal, without echo). Docker Hub's secret is the stack's; another registry's (`registry_credentials`)
is created on first use. The token never goes on a command line, into the environment or the output,
nor over plain HTTP to anything but loopback (AWS_ENDPOINT_URL=http://... elsewhere is refused).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import urllib.parse
from typing import Any, TextIO

from ecr_mirror_cdk.config import ConfigError
from ecr_mirror_cdk.config_parse import load_config
from ecr_mirror_cdk.reference import DOCKER_HUB, is_loopback

REGION_FIX = "set AWS_REGION (e.g. AWS_REGION=eu-west-1 {command}) or a profile with a region (AWS_PROFILE)"
CREDENTIALS_FIX = "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"


class InputError(ValueError):
    pass


def read_credentials(stdin: TextIO, registry: str = "Docker Hub") -> tuple[str, str]:
    if stdin.isatty():
        username = input(f"{registry} username: ").strip()
        token = getpass.getpass(f"{registry} access token (not shown): ").strip()
    else:
        lines = stdin.read().splitlines()
        username = lines[0].strip() if lines else ""
        token = lines[1].strip() if len(lines) > 1 else ""
    if not username:
        raise InputError(f"no {registry} username: give it on the first line of stdin")
    if not token:
        raise InputError(f"no {registry} access token: give it on the second line of stdin")
    return username, token


def store(client: Any, secret_name: str, username: str, token: str, *, create: bool = False) -> str:
    """Put the pair as a new version of the secret, in the JSON shape ECR pull-through cache reads;
    `create`: make the secret when it does not exist yet."""
    value = json.dumps({"username": username, "accessToken": token})
    try:
        return str(client.put_secret_value(SecretId=secret_name, SecretString=value)["VersionId"])
    except client.exceptions.ResourceNotFoundException:
        if not create:
            raise
    return str(client.create_secret(Name=secret_name, SecretString=value,
                                    Description="Upstream registry credentials for the ECR mirror")["VersionId"])


def aws_problem(region: str | None, command: str) -> str | None:
    """What is missing for AWS calls from here (region, credentials), as one line with the fix; else None."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        session = boto3.Session(region_name=region or os.environ.get("AWS_REGION") or None)
    except ProfileNotFound as err:
        return missing_profile(str(err.kwargs.get("profile")))
    if not session.region_name:
        return f"no AWS region: {REGION_FIX.format(command=command)}"
    try:
        credentials = session.get_credentials()
    except Exception as err:  # noqa: BLE001 - a broken profile or SSO cache: say which, in one line
        return f"AWS credentials cannot be loaded ({type(err).__name__}: {err}): {CREDENTIALS_FIX}"
    if credentials is None:
        return f"no AWS credentials: {CREDENTIALS_FIX}"
    return None


def missing_profile(profile: str) -> str:
    variable = "AWS_PROFILE" if os.environ.get("AWS_PROFILE") == profile else "AWS_DEFAULT_PROFILE"
    files = " or ".join(os.environ.get(name, default) for name, default in (
        ("AWS_CONFIG_FILE", "~/.aws/config"), ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")))
    return (f"no AWS profile {profile!r} ({variable}) in {files}: name one that `aws configure list-profiles` "
            f"shows, or unset {variable}")


def aws_client(service: str, region: str | None, **options: Any) -> Any:
    """A boto3 client in `region`, else AWS_REGION: boto3 reads only AWS_DEFAULT_REGION, while the CDK CLI (and so
    `make deploy`) also honours AWS_REGION. The one place the make targets' tools make their clients."""
    import boto3

    return boto3.client(service, region_name=region or os.environ.get("AWS_REGION") or None, **options)


def missing_rule_secret(config_path: str, region: str | None, client: Any = None) -> str | None:
    """A cache rule whose secret does not exist yet: CreatePullThroughCacheRule fails and the deploy rolls back.
    Docker Hub's secret is the stack's own unless `existing_secret`."""
    try:
        config = load_config(config_path)
    except ConfigError as err:
        return str(err)
    created = None if config.docker_hub_credentials.existing_secret else config.docker_hub_credentials.secret_name
    client = client or aws_client("secretsmanager", region)
    from botocore.exceptions import BotoCoreError, ClientError

    for rule in config.pull_through_cache:
        if rule.credentials_secret is None or rule.credentials_secret == created:
            continue
        try:
            client.describe_secret(SecretId=rule.credentials_secret)
        except client.exceptions.ResourceNotFoundException:
            fix = ("set docker_hub_credentials.existing_secret: false (the stack creates it) or create it"
                   if rule.upstream == "docker-hub"
                   else f"store it first: make registry-token REGISTRY={rule.registry}")
            return f"the {rule.upstream} cache rule's secret {rule.credentials_secret} does not exist: {fix}"
        except (BotoCoreError, ClientError) as err:
            return f"cannot check the secret {rule.credentials_secret}: {err}"
    return None


def plain_http_problem(endpoint_url: str) -> str | None:
    """The token may travel over plain HTTP only to loopback (a local test endpoint)."""
    parts = urllib.parse.urlsplit(endpoint_url)
    if parts.scheme == "http" and not is_loopback(parts.netloc):
        return (f"refusing to send the token over plain HTTP to {parts.scheme}://{parts.netloc}: use an https "
                "endpoint (unset AWS_ENDPOINT_URL for AWS itself)")
    return None


def main(argv: list[str] | None = None, *, stdin: TextIO | None = None, client: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stacks.set_token", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mirror.yaml", help="mirror config naming the secret")
    parser.add_argument("--registry", default=DOCKER_HUB,
                        help="upstream registry host whose secret to store (default docker.io; others from "
                             "registry_credentials or a cache rule's credentials_secret)")
    parser.add_argument(
        "--region", help="AWS region of the stack (default: AWS_REGION, else AWS_DEFAULT_REGION or the profile's)"
    )
    parser.add_argument("--check", metavar="COMMAND", nargs="?", const="make deploy",
                        help="only check that an AWS region and credentials are set (for COMMAND's message)")
    parser.add_argument("--secrets", action="store_true",
                        help="with --check: also that each secret a cache rule names exists (ECR refuses the rule)")
    args = parser.parse_args(argv)
    if args.check:
        problem = aws_problem(args.region, args.check)
        if problem is None and args.secrets:
            problem = missing_rule_secret(args.config, args.region, client)
        if problem:
            print(f"error: {args.check}: {problem}", file=sys.stderr)
        return 1 if problem else 0
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    secrets = config.credential_secrets()
    if args.registry not in secrets:
        print(f"error: {args.config}: no secret for {args.registry}: name one under registry_credentials "
              f"(the config has secrets for {', '.join(sorted(secrets))})", file=sys.stderr)
        return 1
    secret_name = secrets[args.registry]
    hub = args.registry == DOCKER_HUB
    registry = "Docker Hub" if hub else args.registry
    if client is None:
        problem = aws_problem(args.region, "make docker-hub-token" if hub else f"make registry-token "
                                                                               f"REGISTRY={args.registry}")
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
        client = aws_client("secretsmanager", args.region)
    problem = plain_http_problem(client.meta.endpoint_url)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        username, token = read_credentials(stdin or sys.stdin, registry)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        # The stack creates Docker Hub's secret (its cache rule needs it at deploy); the others are the team's.
        version = store(client, secret_name, username, token, create=not hub)
    except ClientError as err:
        # The error's own message never holds the secret value; print only code and message.
        error = err.response.get("Error", {})
        print(f"error: secret {secret_name}: {error.get('Code')}: {error.get('Message')}", file=sys.stderr)
        if error.get("Code") == "ResourceNotFoundException":
            print("hint: deploy the stack first (make deploy), or set existing_secret in the config", file=sys.stderr)
        return 1
    except BotoCoreError as err:
        print(f"error: secret {secret_name}: {err}", file=sys.stderr)
        return 1
    print(f"Stored {registry} credentials for {username} in {secret_name} (version {version}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
