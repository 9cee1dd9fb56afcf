"""What the CLI prints: the plan as a table (or JSON), and a sync's progress, one line per image, and summary."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from ecr_mirror_cdk.config import Config

from ..oci.endpoints import Endpoints
from ..planning.sync import Outcome, run_tasks
from ..planning.task import Action, Plan, PlanItem, Task

if TYPE_CHECKING:
    from ..oci.blobs import Progress

EXIT_OK, EXIT_FAILED = 0, 1
PROGRESS_INTERVAL = 5.0  # seconds between progress lines when the output is not a terminal (CI logs)


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


def report_plan(result: Plan, config: Config, out: TextIO, *, as_json: bool) -> int:
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


def sync(result: Plan, endpoints: Endpoints, out: TextIO, *, as_json: bool, workers: int) -> int:
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
