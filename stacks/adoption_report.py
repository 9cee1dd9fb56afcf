"""Which CodeBuild projects of an account and region still pull from Docker Hub: `make adoption-report`.

    python -m stacks.adoption_report [--region REGION]     # default: AWS_REGION, else the profile's

One line per project, as
- adopted: the MIRROR_ variables are set and the inline buildspec runs the setup line;
- adoptable: an inline buildspec on a privileged project: `MirrorAdoption` adopts it (or docs/adopt.md's recipe);
- manual: a buildspec file in the source, which only its team can edit (the line names the command to add), or
  a project that is not privileged (the setup restarts dockerd);
then a summary line. Reads only: ListProjects and BatchGetProjects.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

from ecr_mirror_cdk.adopt_buildspec import MIRROR_VARIABLES, BuildSpecError, read
from ecr_mirror_cdk.buildspec import SETUP_LINE

from .set_token import aws_client
from .set_token import main as check_settings

COMMAND = "make adoption-report"
# CodeBuild API reference, BatchGetProjects: "names ... Maximum number of 100 items".
BATCH = 100
# What setup_mirror.py needs; MIRROR_HOME_REGISTRY only in a replica region.
REQUIRED = [name for name in MIRROR_VARIABLES if name != "MIRROR_HOME_REGISTRY"]
STATUSES = ("adopted", "adoptable", "manual")


def projects(client: Any) -> Iterator[dict[str, Any]]:
    """Every project of the region, as BatchGetProjects describes it, paged by ListProjects' nextToken."""
    token: str | None = None
    while True:
        page = client.list_projects(**({"nextToken": token} if token else {}))
        names = page.get("projects", [])
        for start in range(0, len(names), BATCH):
            yield from client.batch_get_projects(names=names[start:start + BATCH]).get("projects", [])
        token = page.get("nextToken")
        if not token:
            return


def classify(project: dict[str, Any]) -> tuple[str, str]:
    """(status, what is missing or what to do) for one project."""
    environment = project.get("environment") or {}
    names = {variable["name"] for variable in environment.get("environmentVariables") or []}
    missing = [name for name in REQUIRED if name not in names]
    buildspec = (project.get("source") or {}).get("buildspec") or ""
    try:
        spec = read(buildspec) if buildspec else None
    except BuildSpecError as err:
        return "manual", f"inline buildspec that CodeBuild may not read as one: {err}"
    if spec is None:
        where = buildspec or "buildspec.yml (CodeBuild's default)"
        todo = f"buildspec file {where}: add as the first install command: {SETUP_LINE}"
        return "manual", todo + (f"; and set {', '.join(missing)}" if missing else "")
    runs_setup = any(SETUP_LINE in ((phase or {}).get("commands") or [])
                     for phase in (spec.get("phases") or {}).values() if isinstance(phase, dict))
    if runs_setup and not missing:
        return "adopted", ""
    if environment.get("privilegedMode") is not True:
        return "manual", "not privileged: the setup restarts dockerd, which CodeBuild runs only in privileged mode"
    gaps = ([f"set {', '.join(missing)}"] if missing else []) + ([] if runs_setup else ["add the setup line"])
    return "adoptable", f"inline buildspec, privileged: {' and '.join(gaps)} (MirrorAdoption does both)"


def report(client: Any) -> list[str]:
    found = sorted(((project["name"], *classify(project)) for project in projects(client)), key=lambda p: p[0])
    width = max((len(name) for name, _, _ in found), default=0)
    lines = [f"{status:<9}  {name:<{width}}  {note}".rstrip() for name, status, note in found]
    counts = Counter(status for _, status, _ in found)
    lines.append(f"{len(found)} CodeBuild projects in {client.meta.region_name}: "
                 + ", ".join(f"{counts[status]} {status}" for status in STATUSES))
    return lines


def main(argv: list[str] | None = None, *, client: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stacks.adoption_report", description=__doc__.splitlines()[0])
    parser.add_argument("--region", help="AWS region (default: AWS_REGION, else AWS_DEFAULT_REGION or the profile's)")
    args = parser.parse_args(argv)
    if client is None:
        # No region or credentials: the one line `make deploy` prints, naming this command.
        if check_settings(["--check", COMMAND, *(["--region", args.region] if args.region else [])]):
            return 1
        client = aws_client("codebuild", args.region)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        lines = report(client)
    except ClientError as err:
        error = err.response.get("Error", {})
        print(f"error: {COMMAND}: {error.get('Code')}: {error.get('Message')}", file=sys.stderr)
        return 1
    except BotoCoreError as err:
        print(f"error: {COMMAND}: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
