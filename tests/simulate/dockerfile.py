"""The simulation's model of what a Dockerfile pulls: every image its FROM, COPY --from and RUN --mount name.

The product does not read Dockerfiles (builds pull through registry mirrors, ecr_mirror_cdk/setup/);
the fleet simulation still needs to know which images each build pulls, with ARG substitution as BuildKit
does it. Where the mirror serves them is the endpoint's business (tests/simulate/world.py runs it).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

# --- Dockerfile parsing ----------------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"#\s*([a-zA-Z]+)\s*=\s*(.*?)\s*")
_HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-+])?(?P<word>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# BuildKit defines these itself; a FROM that depends on them varies per platform.
PLATFORM_ARGS = frozenset({"BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
                           "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT"})


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    arguments: str  # everything after the keyword, continuations joined
    line: int  # first line, 1-based


@dataclass
class Dockerfile:
    directives: dict[str, str]
    instructions: list[Instruction]


def parse_dockerfile(text: str) -> Dockerfile:
    """Logical instructions: parser directives, comments, line continuations and heredocs handled."""
    lines = text.splitlines()
    directives: dict[str, str] = {}
    index = 0
    while index < len(lines):
        match = _DIRECTIVE.fullmatch(lines[index].strip())
        if not match or match[1].lower() not in ("syntax", "escape", "check") or match[1].lower() in directives:
            break
        directives[match[1].lower()] = match[2]
        index += 1
    escape = directives.get("escape", "\\")
    instructions: list[Instruction] = []
    while index < len(lines):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        start, parts = index + 1, []
        while index < len(lines):
            current = lines[index].rstrip()
            index += 1
            if not current.endswith(escape):
                parts.append(current)
                break
            parts.append(current[:-1])
            # Comment and empty lines inside a continuation are dropped, as Docker does.
            while index < len(lines) and (not lines[index].strip() or lines[index].lstrip().startswith("#")):
                index += 1
        keyword, _, arguments = "".join(parts).strip().partition(" ")
        keyword = keyword.upper()
        if keyword in ("RUN", "COPY", "ADD"):
            index = _skip_heredocs(arguments, lines, index)
        instructions.append(Instruction(keyword, arguments.strip(), start))
    return Dockerfile(directives, instructions)


def _skip_heredocs(arguments: str, lines: list[str], index: int) -> int:
    for match in _HEREDOC.finditer(arguments):
        strip_tabs, word = match[1] == "-", match[3]
        while index < len(lines):
            line = lines[index].lstrip("\t") if strip_tabs else lines[index]
            index += 1
            if line == word:
                break
    return index


class Unresolved(ValueError):
    """A variable without a value: BuildKit would substitute an empty string, which names no image."""


def expand(word: str, variables: Mapping[str, str]) -> str:
    """Dockerfile variable substitution: $V, ${V}, ${V:-default}, ${V:+alternative}, ${V-d}, ${V+a}, \\$."""

    def substitute(match: re.Match[str]) -> str:
        name = match["braced"] or match["bare"]
        op, default = match["op"], match["word"] or ""
        value = variables.get(name)
        if op in (":-", "-"):
            use_default = value is None or (op == ":-" and value == "")
            return expand(default, variables) if use_default else value or ""
        if op in (":+", "+"):
            use_alternative = value is not None and (op == "+" or value != "")
            return expand(default, variables) if use_alternative else ""
        if value is None:
            raise Unresolved(name)
        return value

    out, position = [], 0
    for match in _VARIABLE.finditer(word):
        if match.start() > 0 and word[match.start() - 1] == "\\":  # \$ is a literal dollar
            out.append(word[position:match.start() - 1] + match[0])
        else:
            out.append(word[position:match.start()] + substitute(match))
        position = match.end()
    out.append(word[position:])
    return "".join(out)


@dataclass(frozen=True)
class ImageUse:
    written: str  # the image as the instruction names it after ARG substitution: the named-context key
    where: str  # e.g. "FROM (line 3)"


@dataclass(frozen=True)
class Skipped:
    written: str
    where: str
    reason: str


@dataclass
class _Stage:
    variables: dict[str, str] = field(default_factory=dict)


def _flags(arguments: str) -> tuple[list[str], list[str]]:
    """Leading --flags of an instruction, and the remaining words."""
    words = arguments.split()
    flags = []
    while words and words[0].startswith("--"):
        flags.append(words.pop(0))
    return flags, words


def _words(arguments: str) -> list[str]:
    try:
        return shlex.split(arguments, posix=True)
    except ValueError:  # unbalanced quotes: BuildKit will say so; take the words as they are
        return arguments.split()


def _args(arguments: str) -> Iterator[tuple[str, str | None]]:
    """`ARG A=1 B="two words" C` -> (A, '1'), (B, 'two words'), (C, None)."""
    for word in _words(arguments):
        name, eq, value = word.partition("=")
        if _ARG_NAME.fullmatch(name):
            yield name, value if eq else None


def _env(arguments: str) -> Iterator[tuple[str, str]]:
    words = _words(arguments)
    if words and "=" not in words[0]:  # legacy `ENV NAME value with spaces`
        yield words[0], " ".join(words[1:])
        return
    for word in words:
        name, _, value = word.partition("=")
        yield name, value


def find_images(dockerfile: Dockerfile, build_args: Mapping[str, str]) -> tuple[list[ImageUse], list[Skipped]]:
    """Every image the build pulls; stage references, `scratch` and unresolvable names are not images."""
    images: list[ImageUse] = []
    skipped: list[Skipped] = []
    global_args: dict[str, str] = {}
    stages: list[str | None] = []  # stage names, lower case, in order
    stage: _Stage | None = None

    def image_or_stage(raw: str, variables: Mapping[str, str], where: str) -> None:
        try:
            written = expand(raw, variables)
        except Unresolved as err:
            extra = " (set by BuildKit per platform)" if str(err) in PLATFORM_ARGS else ""
            skipped.append(Skipped(raw, where, f"depends on ARG {err} that has no value here{extra}"))
            return
        is_stage = written.lower() in stages or (written.isdigit() and int(written) < len(stages))
        if is_stage or written.lower() == "scratch":
            return
        images.append(ImageUse(written, where))

    for instruction in dockerfile.instructions:
        keyword, where = instruction.keyword, f"{instruction.keyword} (line {instruction.line})"
        if keyword == "ARG":
            target = global_args if stage is None else stage.variables
            for name, default in _args(instruction.arguments):
                scope = {**global_args, **(stage.variables if stage else {})}
                if name in build_args:
                    target[name] = build_args[name]
                elif default is not None:
                    try:
                        target[name] = expand(default, scope)
                    except Unresolved:
                        target.pop(name, None)  # empty in BuildKit: any image naming it is unresolvable
                elif stage is not None and name in global_args:
                    target[name] = global_args[name]
        elif keyword == "FROM":
            _, words = _flags(instruction.arguments)
            if not words:
                continue
            image_or_stage(words[0], global_args, where)
            alias = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(alias)
            stage = _Stage()
        elif stage is not None and keyword == "ENV":
            stage.variables.update(_env(instruction.arguments))
        elif stage is not None and keyword in ("COPY", "RUN"):
            flags, _ = _flags(instruction.arguments)
            for flag in flags:
                for source in _from_values(flag):
                    image_or_stage(source, stage.variables, f"{keyword} --from (line {instruction.line})")
    return images, skipped


def _from_values(flag: str) -> Iterator[str]:
    name, _, value = flag[2:].partition("=")
    if name == "from":
        yield value
    elif name == "mount":
        for option in value.split(","):
            key, _, option_value = option.partition("=")
            if key.strip() == "from" and option_value:
                yield option_value
