"""`make verify --build`: the CodeBuild project builds a one-line Dockerfile and no pull fell back to the upstream."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from typing import Any

from ecr_mirror_cdk.config import Config, Image
from ecr_mirror_cdk.reference import DOCKER_HUB

from .checks import Check
from .clients import POLL, Clock, client

VERIFY_TAG = "mirror-verify"  # the tag --build pushes to the project's image repository
BUILD_WAIT = 1800.0  # seconds to wait for the test build
LOG_WAIT = 60.0  # seconds for the build's last log lines to arrive in CloudWatch Logs


def build_image(config: Config) -> str | None:
    """A configured tag the build host (linux/amd64) can pull, preferring Docker Hub's: `python:3.13-slim`."""
    def fits(image: Image) -> bool:
        return bool(image.tags) and (not image.platforms or "linux/amd64" in image.platforms)

    candidates = sorted((image for image in config.images if fits(image)),
                        key=lambda image: image.ref.registry != DOCKER_HUB)
    return f"{candidates[0].source}:{candidates[0].tags[0]}" if candidates else None


def with_dockerfile(buildspec: str, dockerfile: str) -> str:
    """The project's own buildspec with a first command that writes `dockerfile` where the build looks for it
    (CONTEXT_DIR=. in the start directory); CDK stores the buildspec as JSON, which YAML reads too."""
    import yaml

    spec = yaml.safe_load(buildspec)
    install = spec["phases"]["install"]
    install["commands"] = [f"printf '%s\\n' {shlex.quote(dockerfile)} > Dockerfile", *install["commands"]]
    return json.dumps(spec, indent=2)


# ecr_mirror_cdk/setup/report.py report(): "mirror: N manifests served by the mirror (...); ...; no request fell back
# to the upstream; not seen: ...", or "...; K fell back to the upstream: ..." (or dockerd's pulls that did not come
# through the mirror) in its place, or "mirror: no record of this build's pulls: ...", or "mirror: not set up: ...".
REPORT_LINE = re.compile(r"mirror: (\d+ manifests served by the mirror|no record of this build's pulls|not set up: ).*")
NO_FALLBACK = "; no request fell back to the upstream"


def report_line(logs: Any, group: str, stream: str) -> str | None:
    """The build's last report line in its CloudWatch Logs stream."""
    found, token = None, None
    while True:
        page = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True,
                                   **({"nextToken": token} if token else {}))
        for event in page["events"]:
            line = event["message"].strip()
            if REPORT_LINE.fullmatch(line):
                found = line
        if not page["events"] or page.get("nextForwardToken") in (None, token):
            return found
        token = page["nextForwardToken"]


def check_build(config: Config, outputs: Mapping[str, str], codebuild: Any = None, logs: Any = None, *,
                wait: float = BUILD_WAIT, clock: Clock | None = None) -> Check:
    """Start the ready-made project on a one-line Dockerfile and read its report line."""
    codebuild, logs, clock = client("codebuild", codebuild), client("logs", logs), clock or Clock()
    image = build_image(config)
    if image is None:
        return Check("build", False, f"{config.origin} has no image with explicit tags for linux/amd64 to build FROM")
    project = outputs["CodeBuildProjectName"]
    buildspec = codebuild.batch_get_projects(names=[project])["projects"][0]["source"]["buildspec"]
    build = codebuild.start_build(
        projectName=project,
        buildspecOverride=with_dockerfile(buildspec, f"FROM {image}"),
        environmentVariablesOverride=[
            {"name": "IMAGE_TAG", "value": VERIFY_TAG, "type": "PLAINTEXT"},
            {"name": "TAG_LATEST", "value": "false", "type": "PLAINTEXT"},
            {"name": "CONTEXT_DIR", "value": ".", "type": "PLAINTEXT"},
        ],
    )["build"]
    deadline = clock.now() + wait
    while not build.get("buildComplete") and clock.now() < deadline:
        clock.sleep(POLL)
        build = codebuild.batch_get_builds(ids=[build["id"]])["builds"][0]
    if not build.get("buildComplete"):
        return Check("build", False, f"{build['id']} still runs after {wait / 60:.0f} min: see "
                                     f"aws codebuild batch-get-builds --ids {build['id']}")
    where = build.get("logs", {})
    line = None
    deadline = clock.now() + LOG_WAIT
    while where.get("groupName") and where.get("streamName"):
        line = report_line(logs, where["groupName"], where["streamName"])
        if line or clock.now() >= deadline:
            break
        clock.sleep(POLL)
    status = build["buildStatus"]
    if status != "SUCCEEDED":
        phase = next((p["phaseType"] for p in build.get("phases", []) if p.get("phaseStatus") == "FAILED"), "?")
        return Check("build", False, f"{build['id']} {status} in {phase}: {line or 'no report line'}; "
                                     f"log: {where.get('deepLink', 'see the project in the CodeBuild console')}")
    if line is None:
        return Check("build", False, f"{build['id']} succeeded but its log has no report line of the "
                                     "setup's --report (ecr_mirror_cdk/setup): make deploy (the buildspec prints it)")
    served = re.match(r"mirror: (\d+) manifests", line)
    if NO_FALLBACK not in line or served is None or served.group(1) == "0":
        return Check("build", False, f"FROM {image}: {line}")
    return Check("build", True, f"{build['id']} built FROM {image} and pushed :{VERIFY_TAG}; {line}")

