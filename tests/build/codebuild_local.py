"""A synthesized buildspec run as CodeBuild runs it: env resolved, one bash shell, phases in order.

What CodeBuild does and this does too: project variables < buildspec `variables` < per-build overrides;
`secrets-manager:` (`secret-id:json-key`) and `parameter-store:` values fetched before the first phase;
every command of every phase in the same shell, so variables carry over; a failing command fails its
phase (after its `finally` commands) and ends the run (the buildspec sets `on-failure: ABORT` on install,
pre_build and build, and post_build is last); exported variables read from the shell at the end.
Not modelled: install runtimes, reports, caches, batch builds.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PHASES = ("install", "pre_build", "build", "post_build")


@dataclass(frozen=True)
class Result:
    returncode: int
    output: str
    exported: dict[str, str]


def secret_value(reference: str, secretsmanager: Any) -> str:
    """`secret-id:json-key:version-stage:version-id`, where secret-id may be a full ARN (which has colons)."""
    parts = reference.split(":")
    secret_id, rest = (":".join(parts[:7]), parts[7:]) if reference.startswith("arn:") else (parts[0], parts[1:])
    key, stage, version = (rest + ["", "", ""])[:3]
    request = {"SecretId": secret_id} | ({"VersionStage": stage} if stage else {}) | (
        {"VersionId": version} if version else {})
    value = secretsmanager.get_secret_value(**request)["SecretString"]
    return str(json.loads(value)[key]) if key else value


def environment(spec: Mapping[str, Any], project_env: Mapping[str, str], overrides: Mapping[str, str], *,
                secretsmanager: Any = None, ssm: Any = None) -> dict[str, str]:
    section = spec.get("env", {})
    env = {**dict(section.get("variables", {})), **project_env}
    for name, reference in section.get("secrets-manager", {}).items():
        env[name] = secret_value(reference, secretsmanager)
    for name, parameter in section.get("parameter-store", {}).items():
        env[name] = ssm.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
    return {**env, **overrides}


def script(spec: Mapping[str, Any], exported_file: Path) -> str:
    lines = [
        "#!/bin/bash",
        'cd "$CODEBUILD_SRC_DIR" || exit 99',
        "CODEBUILD_BUILD_SUCCEEDING=1",
        "_codebuild_failed() {",
        '  echo "[Container] Command did not exit successfully $1 exit status $2"',
        '  echo "[Container] Phase complete: $3 State: FAILED"',
        "}",
    ]
    for name in PHASES:
        phase = spec.get("phases", {}).get(name)
        if not phase:
            continue
        lines += [f"echo '[Container] Entering phase {name.upper()}'", "_phase_rc=0"]
        for command in phase.get("commands", []):
            quoted = shlex.quote(command)
            lines += [f"if [ $_phase_rc -eq 0 ]; then echo '[Container] Running command '{quoted}", command,
                      f"_rc=$?; [ $_rc -eq 0 ] || {{ _codebuild_failed {quoted} $_rc {name.upper()}; "
                      "_phase_rc=$_rc; }",
                      "fi"]
        for command in phase.get("finally", []):  # runs whether or not the phase's commands failed
            lines += [f"echo '[Container] Running command '{shlex.quote(command)}", command]
        lines += ["[ $_phase_rc -eq 0 ] || exit $_phase_rc",
                  f"echo '[Container] Phase complete: {name.upper()} State: SUCCEEDED'"]
    for name in spec.get("env", {}).get("exported-variables", []):
        lines.append(f'printf \'%s=%s\\n\' {name} "${{{name}-}}" >> {shlex.quote(str(exported_file))}')
    return "\n".join(lines) + "\n"


def run(spec: Mapping[str, Any], env: Mapping[str, str], source: Path, *, scratch: Path | None = None,
        timeout: float = 300) -> Result:
    """Run the buildspec in bash with `env` plus what CodeBuild sets itself; `source` is the primary source."""
    scratch = scratch or source.parent / f"{source.name}.codebuild"
    scratch.mkdir(parents=True, exist_ok=True)
    exported_file = scratch / "exported.env"
    exported_file.unlink(missing_ok=True)
    path = scratch / "buildspec.sh"
    path.write_text(script(spec, exported_file))
    env = {**env, "CODEBUILD_SRC_DIR": str(source)}
    process = subprocess.run(["bash", str(path)], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=timeout)
    exported = {}
    if exported_file.exists():
        exported = dict(line.split("=", 1) for line in exported_file.read_text().splitlines())
    return Result(process.returncode, process.stdout, exported)
