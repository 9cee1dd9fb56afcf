"""Reading and editing a project's BuildSpec for adoption: pure functions on the value CloudFormation gets.

The value is a string (a file name, an S3 ARN or an inline buildspec) or, when the inline text holds tokens, an
Fn::Join that CDK rendered; intrinsics are kept as they are. The edited buildspec is written as JSON, which is
YAML (CodeBuild reads it as any other buildspec), so nothing is re-indented.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

# Stands in for a CloudFormation intrinsic inside the buildspec's text while it is parsed; letters and digits
# only, so JSON and YAML read it as part of a string wherever it sits.
_MARKER = "MIRRORTOKEN{}X"
_MARKERS = re.compile(r"MIRRORTOKEN(\d+)X")
# The variables adoption sets on the project; a buildspec that sets them too is refused.
MIRROR_VARIABLES = ("MIRROR_REGISTRY", "MIRROR_MAP", "MIRROR_SETUP_BUCKET", "MIRROR_SETUP_KEY",
                    "MIRROR_HOME_REGISTRY")
_KINDS = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number",
          type(None): "empty"}
# Sections of `env` that set variables (buildspec reference, "env").
_VARIABLE_SECTIONS = ("variables", "parameter-store", "secrets-manager")


# A command that starts dockerd: the program dockerd, or docker:dind's dockerd-entrypoint.sh, where a command begins
# (after `;`, `&`, `|`, `(`, a quote, `then`/`do`, or nohup/sudo/exec/setsid/nice and their options, or VAR=value),
# not asked for its version or help; or docker's init script.
_STARTS_DOCKERD = re.compile(
    r"(?:^|[;&|({`\"']|\b(?:then|do|nohup|sudo|exec|setsid|nice))\s*(?:-\S+\s+)*(?:\w+=\S*\s+)*"
    r"(?:\S*/)?(?:dockerd|dockerd-entrypoint\.sh)(?![\w.-])(?!\s+(?:-v|--version|-h|--help)\b)"
    r"|\bservice\s+docker\s+start\b|/etc/init\.d/docker\s+start\b")
# A command that waits for the daemon it started: asks it (docker info/version/ps, /_ping) or sleeps.
_WAITS_FOR_DOCKERD = re.compile(r"\bdocker\s+(?:info|version|ps|system\s+info)\b|/_ping\b|^\s*sleep\s+\d+\s*$")


class BuildSpecError(ValueError):
    """An inline buildspec adoption cannot read or edit; the message names the key."""


class _Loader(yaml.SafeLoader):
    """YAML as PyYAML reads it, except a plain scalar that JSON would write differently (a date, `yes`, `1.10`,
    `0755`) stays the text the team wrote: the rewritten buildspec never changes a value it did not add."""


def _as_written(construct: Any) -> Any:
    def scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        value = construct(loader, node)
        if isinstance(value, bool):
            return value if node.value.lower() in ("true", "false") else node.value
        return value if json.dumps(value) == node.value else node.value

    return scalar


for _tag, _construct in (("bool", _Loader.construct_yaml_bool), ("int", _Loader.construct_yaml_int),
                         ("float", _Loader.construct_yaml_float)):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _as_written(_construct))
_Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: node.value)


def read(resolved: Any) -> dict[str, Any] | None:
    """The buildspec as an object if it is inline; None for a file name, an S3 ARN or a whole-value intrinsic.
    An inline buildspec that cannot be read as one buildspec mapping is a BuildSpecError."""
    text, _ = _with_markers(resolved)
    if text is None or _is_file_name(text):
        return None
    try:
        spec = json.loads(text)
    except ValueError:
        spec = _yaml(text)
    if not isinstance(spec, dict):
        raise BuildSpecError(f"the inline buildspec is {_kind(spec)}, not a buildspec mapping")
    _check(spec)
    return spec


def with_setup(resolved: Any, setup_line: str) -> Any:
    """The resolved BuildSpec with `setup_line` in install (created if absent) as `added` places it, as JSON;
    intrinsics kept."""
    spec = read(resolved)
    if spec is None:
        raise BuildSpecError("the buildspec is not inline")
    _, intrinsics = _with_markers(resolved)
    try:
        text = json.dumps(added(spec, setup_line), indent=2, ensure_ascii=False)
    except (TypeError, ValueError) as error:  # a key JSON cannot write (a YAML sequence as a key, say)
        raise BuildSpecError(f"the inline buildspec holds a key JSON cannot carry: {error}") from None
    pieces = _MARKERS.split(text)
    parts = [intrinsics[int(piece)] if i % 2 else piece for i, piece in enumerate(pieces)]
    return pieces[0] if len(pieces) == 1 else {"Fn::Join": ["", [part for part in parts if part != ""]]}


def added(spec: dict[str, Any], setup_line: str) -> dict[str, Any]:
    """`spec` with `setup_line` in install: first, or after the last command that starts dockerd and the wait that
    follows it (a custom image's own daemon); every other key and command as it was."""
    phases = spec.get("phases") or {}
    install = dict(phases.get("install") or {})
    commands = list(install.get("commands") or [])
    at = setup_position(commands)
    install["commands"] = [*commands[:at], setup_line, *commands[at:]]
    return {**spec, "phases": {"install": install, **{name: phase for name, phase in phases.items()
                                                     if name != "install"}}}


def setup_position(commands: list[str]) -> int:
    """Where the setup goes among install commands: after the last one that starts dockerd and the commands right
    after it that wait for the daemon, else first. A custom build image gets no dockerd from CodeBuild; its
    buildspec starts one (CodeBuild user guide, "Docker in custom image sample": `nohup /usr/local/bin/dockerd
    ... &`, then `timeout 15 sh -c "until docker info; ..."`), and the setup needs it running."""
    starts = [i for i, command in enumerate(commands) if _STARTS_DOCKERD.search(command)]
    if not starts:
        return 0
    at = starts[-1] + 1
    while at < len(commands) and _WAITS_FOR_DOCKERD.search(commands[at]):
        at += 1
    return at


def runs_first(resolved: Any, setup_line: str) -> bool:
    """Whether an inline BuildSpec (as rendered) runs `setup_line` in install; False for anything else."""
    try:
        spec = read(resolved)
    except BuildSpecError:
        return False
    install = ((spec or {}).get("phases") or {}).get("install") or {}
    return setup_line in (install.get("commands") or [])


def _is_file_name(text: str) -> bool:
    """A file name or S3 ARN is one line that is not a YAML mapping; an inline buildspec has keys (one-line JSON
    included), so a multi-line text is always inline, even one YAML cannot read (CodeBuild user guide,
    "Buildspec file name and storage location": the BuildSpec names a file or holds the buildspec)."""
    if "\n" in text.strip():
        return False
    try:
        return not isinstance(yaml.safe_load(text), dict)
    except yaml.YAMLError:
        return True


def _yaml(text: str) -> Any:
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BuildSpecError(f"the inline buildspec is not valid YAML: {error.problem or error.context}{where}") \
            from None
    except yaml.YAMLError as error:
        raise BuildSpecError(f"the inline buildspec is not valid YAML: {error}") from None
    if len(documents) != 1:
        raise BuildSpecError(f"the inline buildspec holds {len(documents)} YAML documents; CodeBuild reads one")
    return documents[0]


def _check(spec: dict[str, Any]) -> None:
    """The keys adoption reads or edits have the shapes the buildspec reference gives them."""
    phases = _mapping(spec, "phases", "phases")
    install = _mapping(phases, "install", "phases.install")
    commands = install.get("commands")
    if commands is not None and not isinstance(commands, list):
        raise BuildSpecError(f"phases.install.commands is {_kind(commands)}, not a list of commands "
                             "(write commands: [\"...\"])")
    for i, command in enumerate(commands or []):
        if not isinstance(command, str):
            raise BuildSpecError(f"phases.install.commands[{i}] is {_kind(command)}, not a command (quote it: "
                                 "YAML reads 'a: b' as a mapping)")
    env = _mapping(spec, "env", "env")
    for section in _VARIABLE_SECTIONS:
        for name in _mapping(env, section, f"env.{section}"):
            if name in MIRROR_VARIABLES:
                raise BuildSpecError(f"env.{section}.{name} is set in the buildspec; adoption sets it on the project "
                                     "(remove it from the buildspec)")
    unserializable = _unserializable(spec, "")
    if unserializable:
        raise BuildSpecError(f"{unserializable} holds a YAML value JSON cannot carry")


def _mapping(parent: dict[str, Any], key: str, name: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BuildSpecError(f"{name} is {_kind(value)}, not a mapping")
    return value


def _unserializable(value: Any, path: str) -> str | None:
    """The first key whose value JSON cannot write (a !!set, !!binary...), if any."""
    if isinstance(value, dict):
        items = [(f"{path}.{key}" if path else str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    else:
        return None if isinstance(value, str | int | float | bool | type(None)) else path
    for key_path, item in items:
        found = _unserializable(item, key_path)
        if found:
            return found
    return None


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), f"a YAML {type(value).__name__}")


def _with_markers(resolved: Any) -> tuple[str | None, list[Any]]:
    """The BuildSpec as text with a marker per intrinsic (CDK renders specs holding tokens as an Fn::Join)."""
    if isinstance(resolved, str):
        separator, parts = "", [resolved]
    elif isinstance(resolved, dict) and list(resolved) == ["Fn::Join"]:
        separator, parts = resolved["Fn::Join"]
    else:
        return None, []  # a whole-value intrinsic (a parameter, say): nothing to read
    intrinsics = [part for part in parts if not isinstance(part, str)]
    if any(_MARKERS.search(part) for part in parts if isinstance(part, str)):
        raise BuildSpecError(f"the buildspec holds the text {_MARKER.format('N')!r}, which adoption uses as a "
                             "placeholder")
    markers = iter(range(len(intrinsics)))
    text = separator.join(part if isinstance(part, str) else _MARKER.format(next(markers)) for part in parts)
    return text, intrinsics
