"""AWS adapters: ECR login, upstream registry credentials from Secrets Manager.

Credentials never reach a log line: they go straight into the registry client.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from ..oci.errors import CredentialsError

SECRET_MAX_AGE = 300  # seconds a warm Lambda reuses an upstream secret before reading it again
PLACEHOLDER = "REPLACE_ME"  # what the stack stores until `make docker-hub-token` runs


@dataclass(frozen=True)
class EcrLogin:
    host: str  # <account>.dkr.ecr.<region>.amazonaws.com
    username: str
    password: str = field(repr=False)
    expires_at: float  # epoch seconds


def ecr_client(ecr: Any = None) -> Any:
    """`ecr`, or a boto3 ECR client when None: build it once and pass it to the functions below."""
    if ecr is not None:
        return ecr
    import boto3

    return boto3.client("ecr")


def login(ecr: Any = None) -> EcrLogin:
    """GetAuthorizationToken: the registry host from proxyEndpoint, `AWS` and a 12-hour password."""
    data = ecr_client(ecr).get_authorization_token()["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    host = data["proxyEndpoint"].split("://", 1)[-1].rstrip("/")
    return EcrLogin(host, username, password, data["expiresAt"].timestamp())


def registry_client(ecr: Any = None, **options: Any) -> tuple[Any, EcrLogin]:
    """A RegistryClient for the account's ECR (Basic auth, user `AWS`), and the login it uses."""
    from ..oci.registry import RegistryClient

    credentials = login(ecr)
    client = RegistryClient(credentials.host, username=credentials.username, password=credentials.password,
                            **options)
    return client, credentials


def registry_credentials(secret_name: str, *, registry: str, provider: Any = None,
                         max_age: int = SECRET_MAX_AGE) -> tuple[str, str] | None:
    """(username, access token) for `registry` from the secret, or None (anonymous) while it holds the
    placeholder. Powertools caches the value for `max_age`, so calling this on every use costs one
    GetSecretValue per `max_age` and a rotated token arrives within it.

    Raises CredentialsError naming the secret and the registry, never the value, when the secret cannot
    be read (missing, no access, AWS unreachable) or is not a JSON object.
    """
    try:
        if provider is None:
            from aws_lambda_powertools.utilities import parameters

            raw = parameters.get_secret(secret_name, max_age=max_age)
        else:
            raw = provider.get(secret_name, max_age=max_age)
    except Exception as err:  # noqa: BLE001 - Powertools and botocore raise many kinds; the message says which
        raise CredentialsError(f"cannot read the secret {secret_name} for {registry}: {err}") from err
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict):
        # Parsed here, not by Powertools' transform, so that no message can quote the value.
        raise CredentialsError(f"the secret {secret_name} for {registry} is not a JSON object "
                               "with username and accessToken")
    username, token = value.get("username"), value.get("accessToken")
    if not isinstance(username, str) or not isinstance(token, str):
        return None
    if PLACEHOLDER in (username, token) or not username or not token:
        return None
    return username, token
