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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from ecr_mirror_cdk.config import Config, ConfigError, load_config

from .endpoints import Endpoints, connect
from .plan import Action, Plan, PlanItem, Task, plan
from .settings import SERVICE_NAME
from .sync import Outcome, run_tasks

if TYPE_CHECKING:
    from .blobs import Progress

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


PROGRESS_INTERVAL = 5.0  # seconds between progress lines when the output is not a terminal (CI logs)
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
        return _report_plan(result, config, out, as_json=args.json)
    return _sync(result, endpoints, out, as_json=args.json, workers=args.workers)


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


def _short(digest: str | None) -> str:
    return digest.split(":", 1)[-1][:12] if digest else "-"


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def _referrers(item: PlanItem) -> str:
    """The REFERRERS cell: found at the source ("?": not listed, the source counts pulls), new ones, "-": off."""
    check = item.referrers
    if check is None:
        return "-"
    found = "?" if check.found is None else str(check.found)
    return f"{found} ({check.missing} new)" if check.missing else found


def _quota_lines(result: Plan) -> list[str]:
    return [f"quota {q.registry}: {q.remaining} of {q.limit if q.limit is not None else '?'} left, "
            f"reserve {q.reserve}, this plan {q.planned}" for q in result.quotas.values()]


def _report_plan(result: Plan, config: Config, out: TextIO, *, as_json: bool) -> int:
    counts = result.counts()
    if as_json:
        json.dump({"items": [i.as_dict() for i in result.items], "counts": dict(counts),
                   "quotas": [q.as_dict() for q in result.quotas.values()]}, out, indent=2)
        out.write("\n")
        out.flush()
    else:
        rows = [(str(i.task.ref), i.task.repository, _short(i.task.source_digest),
                 _short(i.task.destination_digest), str(i.action), _referrers(i),
                 str(i.task.cost) if i.costs else "0",
                 "" if i.action is Action.SKIP or (i.action is Action.COPY and not i.task.referrers_only)
                 else i.reason) for i in result.items]
        header = ("SOURCE", "REPOSITORY", "SOURCE DIGEST", "DEST DIGEST", "ACTION", "REFERRERS", "COST", "NOTE")
        widths = [max(len(r[n]) for r in [header, *rows]) for n in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)
        for line in _quota_lines(result):
            print(line, file=out)
        cost = sum(i.task.cost for i in result.items if i.action is Action.COPY)
        referrers = sum(i.task.referrers_cost for i in result.items if i.action is Action.COPY)
        print(f"{counts.get('copy', 0)} to copy ({cost} manifest GETs, {referrers} of them for referrers), "
              f"{counts.get('skip', 0)} up to date, {counts.get('deferred', 0)} deferred, "
              f"{counts.get('failed', 0)} failed", file=out)
    return EXIT_FAILED if counts.get("failed") or counts.get("unverified") else EXIT_OK


def _rate(count: int, seconds: float) -> str:
    return f"{_size(count / seconds)}/s" if seconds > 0 else "-"


class _Display:
    """Progress: on a terminal one status line rewritten in place; elsewhere (CI logs) a plain line
    at most every `interval` seconds. Always a line per finished image, with bytes and rate."""

    def __init__(self, out: TextIO, total: int, *, interval: float = PROGRESS_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.tty = out.isatty()
        self.total = total
        self.done = 0
        self.lock = threading.Lock()
        self.moved: dict[str, int] = {}
        self.interval = 0.1 if self.tty else interval
        self.clock = clock
        self.last = clock()

    def progress(self, task: Task) -> Progress:
        self.moved = {}
        started = self.clock()

        def report(digest: str, moved: int, size: int) -> None:
            with self.lock:
                self.moved[digest] = moved
                now = self.clock()
                if now - self.last < self.interval:
                    return
                self.last = now
                total = sum(self.moved.values())
                text = (f"[{self.done + 1}/{self.total}] {task.ref}  {_size(total)}  {len(self.moved)} blobs  "
                        f"{_rate(total, now - started)}")
                self.out.write(f"\r\033[K{text}" if self.tty else f"{text}\n")
                self.out.flush()

        return report

    def line(self, text: str) -> None:
        with self.lock:
            self.out.write(("\r\033[K" if self.tty else "") + text + "\n")
            self.out.flush()
            self.last = self.clock()

    def finished(self, outcome: Outcome) -> None:
        self.done += 1
        task = outcome.task
        if outcome.status == "copied":
            tags = f" (also {', '.join(t for t, _ in task.also)})" if task.also else ""
            self.line(f"[{self.done}/{self.total}] copied {task.ref}{tags} {outcome.destination_digest} "
                      f"{_size(outcome.bytes_copied)} in {outcome.seconds:.1f}s "
                      f"({_rate(outcome.bytes_copied, outcome.seconds)}), {outcome.blobs_copied} blobs "
                      f"({outcome.blobs_skipped} present, {outcome.blobs_mounted} mounted)"
                      f"{_referrer_note(outcome)}")
        elif outcome.status == "skipped":
            self.line(f"[{self.done}/{self.total}] skipped {task.ref}: already copied")
        elif outcome.status == "referrers":
            self.line(f"[{self.done}/{self.total}] referrers of {task.ref}{_referrer_note(outcome)}")
        else:
            self.line(f"[{self.done}/{self.total}] {outcome.status} {task.ref}: {outcome.error}")


def _referrer_note(outcome: Outcome) -> str:
    """`, referrers: 2 copied of 3, 1 refused (…)` for an outcome that handled referrers."""
    result = outcome.referrers
    if result is None:
        return ""
    note = f", referrers: {result.copied} copied of {result.found}"
    if result.failed:
        note += f", {len(result.failed)} refused ({'; '.join(result.failed)})"
    return note + (f", the rest deferred ({result.deferred})" if result.deferred else "")


def _planned(item: PlanItem) -> Outcome:
    """A plan item nothing was done for, as an outcome: sync reports every tag in one schema."""
    status = "skipped" if item.action is Action.SKIP else str(item.action)
    return Outcome(item.task, status, destination_digest=item.task.destination_digest,
                   error="" if item.action is Action.SKIP else item.reason, retry_after=item.retry_after)


def _sync(result: Plan, endpoints: Endpoints, out: TextIO, *, as_json: bool, workers: int) -> int:
    started = time.monotonic()
    tasks = result.tasks()
    display = _Display(out, len(tasks))
    planned = [_planned(i) for i in result.items if i.action is not Action.COPY]
    if not as_json:
        for outcome in planned:
            note = "up to date" if outcome.status == "skipped" else outcome.error
            display.line(f"{outcome.status} {outcome.task.ref}: {note}")
    outcomes = run_tasks(tasks, endpoints, workers=max(2, workers // 2),
                         progress=None if as_json else display.progress,
                         done=None if as_json else display.finished)
    entries = [o.as_dict() for o in planned]
    entries += [tag.as_dict() for o in outcomes for tag in o.per_tag()]
    statuses = [e["status"] for e in entries]
    handled = [o.referrers for o in outcomes if o.referrers is not None]
    summary: dict[str, Any] = {
        "copied": statuses.count("copied"), "skipped": statuses.count("skipped"),
        "deferred": statuses.count("deferred"), "failed": statuses.count("failed"),
        "unverified": statuses.count("unverified"),
        "referrers": sum(r.copied for r in handled), "referrers_failed": sum(len(r.failed) for r in handled),
        "bytes": sum(o.bytes_copied for o in outcomes), "seconds": round(time.monotonic() - started, 3),
        "quotas": [q.as_dict() for q in result.quotas.values()], "items": entries,
    }
    if as_json:
        json.dump(summary, out, indent=2)
        out.write("\n")
        out.flush()
    else:
        for line in _quota_lines(result):
            display.line(line)
        display.line(f"{summary['copied']} copied ({_size(summary['bytes'])}), {summary['skipped']} up to date, "
                     f"{summary['deferred']} deferred, {summary['failed']} failed"
                     f"{f', {n} unverified (tags held)' if (n := summary['unverified']) else ''} "
                     f"in {summary['seconds']:.1f}s; "
                     f"referrers: {summary['referrers']} copied, {summary['referrers_failed']} refused")
    return EXIT_FAILED if summary["failed"] or summary["unverified"] else EXIT_OK
