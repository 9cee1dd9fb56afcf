"""Local CLI: the Lambdas' planner and copier in one process, against any registry.

Exit status: 0 when nothing failed (deferred work is not a failure), 1 when an image failed,
2 for a bad command line or config file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from .config import Config, ConfigError, load_config
from .endpoints import Endpoints, connect, parse_cache
from .observability import logger
from .plan import Action, Plan, PlanItem, Task, plan
from .sync import Outcome, run_tasks

if TYPE_CHECKING:
    from .blobs import Progress

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _mapping(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=HOST[:PORT]")
    return key, value


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default="mirror.yaml", help="mirror config file (default: mirror.yaml)")
    common.add_argument("--registry", metavar="HOST[:PORT]",
                        help="destination registry (loopback hosts over HTTP); default: your account's ECR")
    common.add_argument("--upstream", metavar="REGISTRY=HOST[:PORT]", type=_mapping, action="append", default=[],
                        help="reach a source registry elsewhere, e.g. docker.io=127.0.0.1:5001 (repeatable)")
    common.add_argument("--cache", metavar="PREFIX=HOST[:PORT]", type=_mapping, action="append", default=[],
                        help="a registry acting as the pull-through cache of a config rule's prefix: HOST[:PORT] "
                             "serves the upstream's paths (distribution's proxy mode), HOST[:PORT]/PREFIX lays "
                             "repositories out as ECR does, under the prefix, and gets its tags moved by the "
                             "copier (repeatable); without it, and with --registry, images under a rule are "
                             "copied directly")
    common.add_argument("--docker-hub-secret", metavar="NAME",
                        help="Secrets Manager secret with Docker Hub username/accessToken (default: anonymous)")
    common.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    common.add_argument("--workers", type=int, default=8, help="concurrent requests (default: 8)")
    common.add_argument("--verbose", action="store_true", help="structured logs on stderr")
    top = argparse.ArgumentParser(prog="python -m lambdas.mirror",
                                  description="Mirror container images into ECR (or any registry).")
    commands = top.add_subparsers(dest="command", required=True, metavar="{plan,sync}")
    commands.add_parser("plan", parents=[common], help="show what a sync would do, with HEADs only",
                        description="Show each image/tag, its digests, the action and the quota it would cost. "
                                    "HEAD requests only: costs no Docker Hub pulls.")
    commands.add_parser("sync", parents=[common], help="copy what the plan says",
                        description="Plan, then copy or warm every image/tag that needs it.")
    return top


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         endpoints: Endpoints | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    args = parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"error: {error}", file=err)
        return EXIT_USAGE
    prefixes = {rule.prefix for rule in config.pull_through_cache}
    for prefix, value in args.cache:
        if prefix not in prefixes:
            print(f"error: --cache {prefix}=...: {args.config} has no pull_through_cache rule with prefix "
                  f"{prefix!r} (have: {', '.join(sorted(prefixes)) or 'none'})", file=err)
            return EXIT_USAGE
        try:
            parse_cache(prefix, value)
        except ValueError as error:
            print(f"error: --{error}", file=err)
            return EXIT_USAGE
    with _quiet_logs(err, verbose=args.verbose):
        try:
            endpoints = endpoints or connect(args.registry, upstreams=dict(args.upstream), caches=dict(args.cache),
                                             docker_hub_secret=args.docker_hub_secret)
        except Exception as error:  # noqa: BLE001 - no AWS credentials, no ECR: one line, not a traceback
            print(f"error: cannot reach the destination registry: {type(error).__name__}: {error}", file=err)
            return EXIT_FAILED
        result = plan(config, endpoints, workers=args.workers)
        if args.command == "plan":
            return _report_plan(result, config, out, as_json=args.json)
        return _sync(result, endpoints, out, as_json=args.json, workers=args.workers)


@contextmanager
def _quiet_logs(stream: TextIO, *, verbose: bool) -> Any:
    """Logs go to stderr (stdout carries the report), warnings only unless --verbose."""
    handler = logger.registered_handler
    old_stream = getattr(handler, "stream", None)
    old_level = logger.log_level
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(stream)
    logger.setLevel(logging.INFO if verbose else logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old_level)
        if isinstance(handler, logging.StreamHandler) and old_stream is not None:
            handler.setStream(old_stream)


def _short(digest: str | None) -> str:
    return digest.split(":", 1)[-1][:12] if digest else "-"


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def _quota_lines(result: Plan) -> list[str]:
    return [f"quota {q.registry}: {q.remaining} of {q.limit if q.limit is not None else '?'} left, "
            f"reserve {q.reserve}, this plan {q.planned}" for q in result.quotas.values()]


def _report_plan(result: Plan, config: Config, out: TextIO, *, as_json: bool) -> int:
    counts = result.counts()
    if as_json:
        json.dump({"items": [i.as_dict() for i in result.items], "counts": dict(counts),
                   "quotas": [q.as_dict() for q in result.quotas.values()]}, out, indent=2)
        out.write("\n")
    else:
        rows = [(str(i.task.ref), i.task.route_name, _short(i.task.source_digest),
                 _short(i.task.destination_digest), str(i.action),
                 str(i.task.cost) if i.action in (Action.COPY, Action.DEFERRED) else "0",
                 "" if i.action in (Action.SKIP, Action.COPY) else i.reason) for i in result.items]
        header = ("SOURCE", "ROUTE", "SOURCE DIGEST", "DEST DIGEST", "ACTION", "COST", "NOTE")
        widths = [max(len(r[n]) for r in [header, *rows]) for n in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)
        for line in _quota_lines(result):
            print(line, file=out)
        cost = sum(i.task.cost for i in result.items if i.action is Action.COPY)
        print(f"{counts.get('copy', 0)} to copy ({cost} manifest GETs), {counts.get('skip', 0)} up to date, "
              f"{counts.get('deferred', 0)} deferred, {counts.get('failed', 0)} failed", file=out)
    return EXIT_FAILED if counts.get("failed") else EXIT_OK


class _Display:
    """One status line rewritten in place on a terminal; plain lines elsewhere."""

    def __init__(self, out: TextIO, total: int) -> None:
        self.out = out
        self.tty = out.isatty()
        self.total = total
        self.done = 0
        self.lock = threading.Lock()
        self.moved: dict[str, int] = {}
        self.last = 0.0

    def progress(self, task: Task) -> Progress | None:
        if not self.tty:
            return None
        self.moved = {}

        def report(digest: str, moved: int, size: int) -> None:
            with self.lock:
                self.moved[digest] = moved
                now = time.monotonic()
                if now - self.last < 0.1:
                    return
                self.last = now
                self.out.write(f"\r\033[K[{self.done + 1}/{self.total}] {task.ref}  "
                               f"{_size(sum(self.moved.values()))}  {len(self.moved)} blobs")
                self.out.flush()

        return report

    def line(self, text: str) -> None:
        with self.lock:
            self.out.write(("\r\033[K" if self.tty else "") + text + "\n")
            self.out.flush()

    def finished(self, outcome: Outcome) -> None:
        self.done += 1
        task = outcome.task
        if outcome.status == "copied":
            verb = "warmed" if task.via else "copied"
            self.line(f"{verb} {task.ref} {outcome.destination_digest} {_size(outcome.bytes_copied)}, "
                      f"{outcome.blobs_copied} blobs ({outcome.blobs_skipped} present, {outcome.blobs_mounted} "
                      f"mounted), {outcome.seconds:.1f}s")
        else:
            self.line(f"{outcome.status} {task.ref}: {outcome.error}")


def _planned_entry(item: PlanItem) -> dict[str, Any]:
    entry = item.as_dict()
    entry["status"] = {"skip": "skipped"}.get(entry.pop("action"), str(item.action))
    return entry


def _sync(result: Plan, endpoints: Endpoints, out: TextIO, *, as_json: bool, workers: int) -> int:
    started = time.monotonic()
    tasks = result.tasks()
    display = _Display(out, len(tasks))
    if not as_json:
        for item in result.items:
            if item.action is not Action.COPY:
                note = "up to date" if item.action is Action.SKIP else item.reason
                display.line(f"{'skipped' if item.action is Action.SKIP else item.action} {item.task.ref}: {note}")
    outcomes = run_tasks(tasks, endpoints, workers=max(2, workers // 2),
                         progress=None if as_json else display.progress,
                         done=None if as_json else display.finished)
    entries = [_planned_entry(i) for i in result.items if i.action is not Action.COPY]
    entries += [o.as_dict() for o in outcomes]
    statuses = [e["status"] for e in entries]
    summary: dict[str, Any] = {
        "copied": statuses.count("copied"), "skipped": statuses.count("skipped"),
        "deferred": statuses.count("deferred"), "failed": statuses.count("failed"),
        "bytes": sum(o.bytes_copied for o in outcomes), "seconds": round(time.monotonic() - started, 3),
        "quotas": [q.as_dict() for q in result.quotas.values()], "items": entries,
    }
    if as_json:
        json.dump(summary, out, indent=2)
        out.write("\n")
    else:
        for line in _quota_lines(result):
            display.line(line)
        display.line(f"{summary['copied']} copied ({_size(summary['bytes'])}), {summary['skipped']} up to date, "
                     f"{summary['deferred']} deferred, {summary['failed']} failed in {summary['seconds']:.1f}s")
    return EXIT_FAILED if summary["failed"] else EXIT_OK
