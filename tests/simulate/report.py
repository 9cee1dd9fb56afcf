"""The simulation's table (terminal and Markdown) and chart."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from .run import Mode, Result

COLUMNS = ("Mode", "Builds", "Failed with 429", "Upstream manifest GETs", "Upstream bytes",
           "`docker run` images pulled / tag GETs at Docker Hub", "Bumped tag reaches builds after")


def size(count: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("kB", 1_000)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def hours(seconds: float | None) -> str:
    if seconds is None:
        return "not by the end"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def label(result: Result, accounts: int) -> str:
    if result.mode is Mode.DIRECT:
        return "direct (anonymous, one shared IP)"
    if result.mode is Mode.LOGGED_IN:
        return f"logged in ({accounts} Docker Hub account{'s' if accounts > 1 else ''})"
    return "mirrored (this project)"


def staleness(result: Result) -> str:
    if result.mode is not Mode.MIRRORED:
        return "at once (pulled upstream)"
    if not result.staleness:
        return "n/a"
    served = [s.served_after for s in result.staleness]
    stale = sum(s.stale_builds for s in result.staleness)
    if any(s is None for s in served):
        return f"{sum(s is None for s in served)} of {len(served)} bumps never; {stale} builds got the old image"
    known = [s for s in served if s is not None]
    return (f"median {hours(statistics.median(known))}, max {hours(max(known))}; "
            f"{stale} build{'' if stale == 1 else 's'} got the old image")


def rows(results: Sequence[Result], accounts: int) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for r in results:
        gets = str(r.upstream_gets)
        if r.mode is Mode.MIRRORED:
            gets += f" (+{r.prefill_gets} first fill)"
        failed = f"{r.failed_429} ({100 * r.failed_429 / max(r.builds, 1):.0f}%)"
        if r.failed_other:
            failed += f" +{r.failed_other} other"
        runs = f"{r.test_pulls} / {r.test_hub_pulls}"
        out.append((label(r, accounts), str(r.builds), failed, gets, size(r.upstream_bytes), runs, staleness(r)))
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
    lines.insert(1, "|" + "|".join(["---"] + ["--:"] * 5 + ["---"]) + "|")
    return "\n".join(lines)


def staleness_table(result: Result) -> str:
    """Markdown: per bump, when it happened and when the mirror's tag was a copy of the new digest."""
    out = ["| Upstream tag bump | At | Builds get the new image after | Builds that got the old image |",
           "|---|--:|--:|--:|"]
    for s in result.staleness:
        at = f"{int(s.bumped_at // 3600):02d}:{int(s.bumped_at % 3600 // 60):02d}"
        out.append(f"| {s.image} | {at} | {hours(s.served_after)} | {s.stale_builds} |")
    return "\n".join(out)


def chart(results: Sequence[Result], path: Path, *, accounts: int, bumps: Sequence[float]) -> Path:
    """Cumulative upstream pulls and failed builds over the simulated day, per mode; below, for the
    mirrored mode, each bumped tag's time from the bump until builds got the new image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {Mode.DIRECT: "#d62728", Mode.LOGGED_IN: "#ff7f0e", Mode.MIRRORED: "#2ca02c"}
    figure, (pulls, failures, stale) = plt.subplots(3, 1, figsize=(9, 8.5), sharex=True, constrained_layout=True,
                                                    gridspec_kw={"height_ratios": (3, 2, 2)})
    for result in results:
        t = [0.0] + [when / 3600 for when, _, _ in result.timeline]
        name = label(result, accounts)
        style = {"color": colors[result.mode], "label": name}
        pulls.step(t, [0] + [g for _, g, _ in result.timeline], where="post", **style)
        failures.step(t, [0] + [f for _, _, f in result.timeline], where="post", **style)
    mirrored = next((r for r in results if r.mode is Mode.MIRRORED and r.staleness), None)
    if mirrored:
        for row, bump in enumerate(mirrored.staleness):
            end = (bump.served_after if bump.served_after is not None else 24 * 3600 - bump.bumped_at) / 3600
            stale.barh(row, end, left=bump.bumped_at / 3600, height=0.5, color=colors[mirrored.mode],
                       label=label(mirrored, accounts) if row == 0 else None)
        names = [s.image for s in mirrored.staleness]
        stale.set_yticks(range(len(names)), names, fontsize=8)
        stale.invert_yaxis()
        syncs = [when for when, _ in mirrored.syncs if when >= 0]
        if len(syncs) <= 25:  # every 10 minutes would hide the bars
            for when in syncs:
                stale.axvline(when / 3600, color="#2ca02c", linestyle="--", linewidth=0.8)
        stale.legend(loc="lower left", fontsize=8)
    for axis in (pulls, failures, stale):
        for when in bumps:
            axis.axvline(when / 3600, color="grey", linestyle=":", linewidth=0.8)
        axis.grid(alpha=0.3)
    pulls.set_ylabel("upstream manifest GETs\n(Docker Hub pulls, cumulative)")
    failures.set_ylabel("builds failed with 429\n(cumulative)")
    stale.set_ylabel("bump until builds\nget the new image")
    stale.set_xlabel(f"simulated hour of the day (dotted: upstream tag bumps; syncs: {results[0].schedule})")
    stale.set_xlim(0, 24)
    stale.set_xticks(range(0, 25, 3))
    policy = results[0].policy
    pulls.set_title(f"{results[0].builds} builds from one IP; Docker Hub: {policy.anonymous} anonymous / "
                    f"{policy.authenticated} per account per {policy.window / 3600:g} h", fontsize=11)
    pulls.legend(loc="upper left", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
