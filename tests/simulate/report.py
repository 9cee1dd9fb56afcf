"""The simulation's table (terminal and Markdown) and chart."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from .run import Mode, Result

COLUMNS = ("Mode", "Builds", "Failed with 429", "Upstream manifest GETs", "Upstream bytes", "Staleness after a bump")


def size(count: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("kB", 1_000)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def hours(seconds: float | None) -> str:
    if seconds is None:
        return "not by the end"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def label(result: Result, accounts: int) -> str:
    if result.mode is Mode.DIRECT:
        return "direct (anonymous, one shared IP)"
    if result.mode is Mode.LOGGED_IN:
        return f"logged in ({accounts} Docker Hub account{'s' if accounts > 1 else ''})"
    return "mirrored (ECR mirror + PTC)"


def staleness(result: Result) -> str:
    if result.mode is not Mode.MIRRORED or not result.staleness:
        return "n/a"
    served = [s.served_after for s in result.staleness]
    complete = [s.complete_after for s in result.staleness]
    if any(c is None for c in complete):
        return f"{sum(c is None for c in complete)} bump(s) not mirrored by the end"
    known = [s for s in served if s is not None]
    return (f"serves new tag: median {hours(statistics.median(known))}; all platforms: median "
            f"{hours(statistics.median(c for c in complete if c is not None))}, max "
            f"{hours(max(c for c in complete if c is not None))}")


def rows(results: Sequence[Result], accounts: int) -> list[tuple[str, ...]]:
    out = []
    for r in results:
        gets = str(r.upstream_gets)
        if r.mode is Mode.MIRRORED:
            gets += f" (+{r.prefill_gets} first fill)"
        failed = f"{r.failed_429} ({100 * r.failed_429 / max(r.builds, 1):.0f}%)"
        if r.failed_other:
            failed += f" +{r.failed_other} other"
        out.append((label(r, accounts), str(r.builds), failed, gets, size(r.upstream_bytes), staleness(r)))
    return out


def table(results: Sequence[Result], accounts: int) -> str:
    """A plain-text table for the terminal."""
    body = [COLUMNS, *rows(results, accounts)]
    widths = [max(len(row[i]) for row in body) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results: Sequence[Result], accounts: int) -> str:
    body = [COLUMNS, *rows(results, accounts)]
    lines = ["| " + " | ".join(row) + " |" for row in body]
    lines.insert(1, "|" + "|".join(["---"] + ["--:"] * 4 + ["---"]) + "|")
    return "\n".join(lines)


def chart(results: Sequence[Result], path: Path, *, accounts: int, bumps: Sequence[float],
          limits: tuple[int, int]) -> Path:
    """Cumulative upstream pulls (top) and failed builds (bottom) over the simulated day, per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {Mode.DIRECT: "#d62728", Mode.LOGGED_IN: "#ff7f0e", Mode.MIRRORED: "#2ca02c"}
    figure, (pulls, failures) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, constrained_layout=True)
    for result in results:
        t = [0.0] + [when / 3600 for when, _, _ in result.timeline]
        name = label(result, accounts)
        pulls.step(t, [0] + [g for _, g, _ in result.timeline], where="post", color=colors[result.mode], label=name)
        failures.step(t, [0] + [f for _, _, f in result.timeline], where="post", color=colors[result.mode],
                      label=name)
    for axis in (pulls, failures):
        for when in bumps:
            axis.axvline(when / 3600, color="grey", linestyle=":", linewidth=0.8)
        axis.grid(alpha=0.3)
    pulls.set_ylabel("upstream manifest GETs\n(Docker Hub pulls, cumulative)")
    failures.set_ylabel("builds failed with 429\n(cumulative)")
    failures.set_xlabel("simulated hour of the day (dotted: upstream tag bumps)")
    failures.set_xlim(0, 24)
    failures.set_xticks(range(0, 25, 3))
    pulls.set_title(f"{results[0].builds} builds from one IP; limits {limits[0]} anonymous, "
                    f"{limits[1]} authenticated pulls per 6 h", fontsize=11)
    pulls.legend(loc="upper left", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
