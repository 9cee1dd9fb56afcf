"""moto in server mode on loopback: the only stand-in, for AWS APIs that cannot run here."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.session
from moto.server import ThreadedMotoServer

from .registry import free_port

REGION = "us-east-1"


@contextmanager
def moto_server() -> Iterator[str]:
    """Start moto on 127.0.0.1 and yield its endpoint URL; the caller sets it on clients."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto keeps its state per process, not per server: start each server empty, and leave it empty.
    _reset(endpoint)
    try:
        yield endpoint
    finally:
        _reset(endpoint)
        server.stop()


def _reset(endpoint: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()


def fake_aws_environment(endpoint: str) -> dict[str, str]:
    """Environment for boto3 and the AWS CLI to talk to moto with dummy credentials."""
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
    }


def moto_client(service: str, endpoint: str) -> Any:
    """A boto3 client for moto with dummy credentials, whatever the process environment holds."""
    session = botocore.session.get_session()
    session.set_credentials("testing", "testing")
    return boto3.session.Session(botocore_session=session, region_name=REGION).client(service, endpoint_url=endpoint)
