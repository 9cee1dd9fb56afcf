"""Local CLI: the Lambdas' planner and copier in one process, against any registry.

Exit status: 0 when nothing failed (deferred work is not a failure), 1 when an image failed or a tag
was held for want of a signature (`verify`), 2 for a bad command line or config file, 130 when
interrupted (Ctrl-C).

Imports only what a command uses: no Powertools or X-Ray SDK (0.3 s per process), and boto3 only
when the destination is ECR or an upstream's secret is read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn, TextIO

from ecr_mirror_cdk.config import ConfigError
from ecr_mirror_cdk.config_parse import load_config

from ..aws.connect import connect
from ..oci.endpoints import Endpoints
from ..planning.plan import plan
from ..settings import SERVICE_NAME
from .report import EXIT_FAILED, report_plan, sync

EXIT_USAGE = 2


_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?")


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line: argparse would print the whole usage block before the message."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _without_scheme(text: str, shape: str, *, key: str = "") -> None:
    """A URL where a registry host goes: say what to write instead."""
    if "://" in text:
        scheme, rest = text.split("://", 1)
        raise argparse.ArgumentTypeError(
            f"{key + text!r}: write {key + rest!r} ({shape} without {scheme}://: loopback hosts are reached "
            "over HTTP, others over HTTPS)")


def _host(text: str) -> str:
    """HOST[:PORT], as image references name registries: no scheme, no path."""
    _without_scheme(text, "HOST[:PORT]")
    if not _HOST.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST[:PORT]")
    return text


def _upstream(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not REGISTRY=HOST[:PORT]")
    _without_scheme(value, "REGISTRY=HOST[:PORT]", key=f"{key}=")
    host, slash, path = value.partition("/")
    return key, _host(host) + slash + path


def _secret(text: str) -> tuple[str, str]:
    registry, sep, secret = text.partition("=")
    if not sep or not registry or not secret:
        raise argparse.ArgumentTypeError(f"{text!r} is not REGISTRY=SECRET")
    return _host(registry), secret


def parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--config", default="mirror.yaml", help="mirror config file (default: mirror.yaml)")
    common.add_argument("--registry", metavar="HOST[:PORT]", type=_host,
                        help="destination registry (loopback hosts over HTTP); default: your account's ECR")
    common.add_argument("--upstream", metavar="REGISTRY=HOST[:PORT]", type=_upstream, action="append", default=[],
                        help="reach a source registry elsewhere, e.g. docker.io=127.0.0.1:5001 (repeatable)")
    common.add_argument("--credentials-from-secrets", action="store_true",
                        help="log in to each upstream with the Secrets Manager secret the config names for it, "
                             "as the Lambdas do (docker_hub_credentials, a rule's credentials_secret, "
                             "registry_credentials); default: anonymous")
    common.add_argument("--registry-credentials", metavar="REGISTRY=SECRET", type=_secret, action="append",
                        default=[], help="log in to REGISTRY (as images name it, e.g. ghcr.io) with the Secrets "
                                         "Manager secret SECRET, JSON username/accessToken (repeatable; wins over "
                                         "--credentials-from-secrets)")
    common.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    common.add_argument("--workers", type=int, default=8, help="concurrent requests (default: 8)")
    common.add_argument("--verbose", action="store_true", help="structured logs on stderr")
    top = _Parser(prog="python -m lambdas.mirror",
                                  description="Mirror container images into ECR (or any registry).")
    commands = top.add_subparsers(dest="command", required=True, metavar="{plan,sync}")
    commands.add_parser("plan", parents=[common], help="show what a sync would do, with HEADs only",
                        description="Show each image/tag, its digests, the action and the quota it would cost. "
                                    "HEAD requests only: costs no Docker Hub pulls.")
    commands.add_parser("sync", parents=[common], help="copy what the plan says",
                        description="Plan, then copy every image/tag that needs it.")
    return top


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         endpoints: Endpoints | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    args = parser().parse_args(argv)
    try:
        with _logs(err, verbose=args.verbose):
            return _run(args, out, err, endpoints)
    except KeyboardInterrupt:
        print("interrupted: the image in progress was abandoned uncommitted (its tags unchanged); "
              "images reported as copied are complete", file=err)
        return 130
    except BrokenPipeError:
        # `... --json | head`: the reader left. Stop quietly, as the Python docs advise
        # (library/signal.html, "Note on SIGPIPE"): no traceback, and no second error at exit.
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def _run(args: argparse.Namespace, out: TextIO, err: TextIO, endpoints: Endpoints | None) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"error: {error}", file=err)
        return EXIT_USAGE
    credentials = config.credential_secrets() if args.credentials_from_secrets else {}
    credentials.update(args.registry_credentials)
    try:
        endpoints = endpoints or connect(args.registry, upstreams=dict(args.upstream), credentials=credentials)
    except Exception as error:  # noqa: BLE001 - no AWS credentials, no ECR: one line, not a traceback
        print(f"error: {_destination_problem(error)}", file=err)
        return EXIT_FAILED
    # `plan` stays HEADs only: the signature checks (manifest GETs) run with `sync`, as in the planner Lambda.
    result = plan(config, endpoints, workers=args.workers, check_signatures=args.command == "sync")
    if args.command == "plan":
        return report_plan(result, config, out, as_json=args.json)
    return sync(result, endpoints, out, as_json=args.json, workers=args.workers)


def _destination_problem(error: Exception) -> str:
    """One line for the usual reasons the account's ECR cannot be reached, with the fix."""
    kind = type(error).__name__
    other = "or give --registry HOST[:PORT] to mirror into another registry"
    if kind == "NoRegionError":
        return f"no AWS region for your account's ECR: set AWS_REGION (e.g. AWS_REGION=eu-west-1), {other}"
    if kind == "ProfileNotFound":
        return (f"no AWS profile {getattr(error, 'kwargs', {}).get('profile')!r} (AWS_PROFILE) for your account's "
                f"ECR: name one that `aws configure list-profiles` shows, {other}")
    if kind in ("NoCredentialsError", "PartialCredentialsError"):
        return f"no AWS credentials for your account's ECR: set AWS_PROFILE or AWS_ACCESS_KEY_ID, {other}"
    return f"cannot reach your account's ECR: {kind}: {error} ({other})"


class _JsonLines(logging.Formatter):
    """--verbose: one JSON object per log record, with the fields the engine attaches."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in self._STANDARD}
        return json.dumps({"level": record.levelname, "message": record.getMessage(), **fields}, default=str)


@contextmanager
def _logs(stream: TextIO, *, verbose: bool) -> Iterator[None]:
    """The engine's log records go to stderr (stdout carries the report): errors only, all with --verbose."""
    log = logging.getLogger(SERVICE_NAME)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JsonLines())
    old_level, old_propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO if verbose else logging.ERROR)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate
