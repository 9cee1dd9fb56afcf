"""The Docker Hub secret that ECR pull-through cache and the mirror log in with; never a value in the template."""

from __future__ import annotations

import json

from aws_cdk import Acknowledgment, RemovalPolicy, Validations
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from ecr_mirror_cdk import constants
from ecr_mirror_cdk.config import Credentials


class DockerHubCredentials(Construct):
    """Creates the secret with a placeholder username and a random token, or references an existing one.

    The real token is stored after deploy with `make docker-hub-token` (see `stacks.set_token`).
    SSM SecureString parameters named in the config are only read by the build; never created here.
    """

    def __init__(self, scope: Construct, id: str, *, credentials: Credentials) -> None:
        super().__init__(scope, id)
        if credentials.existing_secret:
            self.secret: secretsmanager.ISecret = secretsmanager.Secret.from_secret_name_v2(
                self, "Secret", credentials.secret_name
            )
            return
        secret = secretsmanager.Secret(
            self,
            "Secret",
            secret_name=credentials.secret_name,
            description="Docker Hub username and access token for ECR pull-through cache and the mirror",
            # CloudFormation generates the token at deploy time, so no value is ever in the template;
            # the username placeholder tells the mirror and the build that nothing real is stored yet.
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({"username": constants.PLACEHOLDER}),
                generate_string_key="accessToken",
                exclude_punctuation=True,
            ),
        )
        # Keep the stored token when the stack goes (a new stack adopts it: docs/deploy.md), but not when
        # the first create rolls back: a kept secret with this fixed name would make every retry fail.
        secret.apply_removal_policy(RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE)
        Validations.of(secret).acknowledge(
            Acknowledgment(
                id="AwsSolutions-SMG4",
                reason="Docker Hub issues access tokens in its own UI; Secrets Manager cannot rotate them. "
                "Rotate in Docker Hub, then store the new token with `make docker-hub-token`.",
            )
        )
        self.secret = secret
