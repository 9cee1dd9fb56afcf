"""The check behind tests/unit/test_docs.py: what a markdown file names that does not exist. It reads every fenced
shell block (bash, sh, shell, console) and every inline code span, and reports make targets the Makefile lacks,
flags `python -m lambdas.mirror plan|sync` and the build-host setup lack (from their argparse parsers), flags
given through `make TARGET ARGS=…` that what the target runs lacks, and repository paths that do not exist."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<lang>[\w+-]*)[^\n]*$")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", "|&", ";;"}
REDIRECTIONS = {"<", ">", ">>", "<<", "<<<", ">&", "&>", "<&", ">|"}
NOT_A_PATH = re.compile(r"[$<>*…{}]|://")


# --- where the flags come from ---------------------------------------------------------------------------


def help_flags(show_help: Callable[[], object]) -> set[str]:
    """The option strings an argparse parser lists in its --help (it prints and exits)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        show_help()
    flags: set[str] = set()
    for line in out.getvalue().splitlines():
        if match := re.match(r"\s+(-.*?)(?:\s{2,}|$)", line):
            flags.update(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", match.group(1)))
    return flags


# The build-host setup: the package ecr_mirror_cdk/setup/, run as a module or as the archive builds fetch.
def setup_flags() -> set[str]:
    from ecr_mirror_cdk.setup.cli import arguments

    return help_flags(lambda: arguments(["--help"]))


def setup_arguments(tokens: list[str]) -> list[str] | None:
    """The arguments a command gives the setup (`python3 …/setup_mirror.py[z] ARGS`, `python3 -m ecr_mirror_cdk.setup
    ARGS`), or None if it is not the setup."""
    for n, token in enumerate(tokens):
        if re.search(r"(^|/)setup_mirror\.pyz?$", token):
            return tokens[n + 1:]
        if token == "-m" and tokens[n + 1:n + 2] == ["ecr_mirror_cdk.setup"]:
            return tokens[n + 2:]
    return None


@cache
def mirror_cli_flags() -> dict[str, frozenset[str]]:
    """`python -m lambdas.mirror`'s subcommands and the flags of each."""
    from lambdas.mirror.cli.main import parser

    (commands,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: frozenset(flag for action in sub._actions for flag in action.option_strings)
            for name, sub in commands.choices.items()}


@cache
def make_args_flags() -> dict[str, frozenset[str]]:
    """What `make TARGET ARGS="…"` passes ARGS to, for the targets whose ARGS are flags of our own modules."""
    from stacks import adoption_report
    from stacks.verify import cli as verify

    mirror = mirror_cli_flags()
    return {"plan": mirror["plan"], "sync": mirror["sync"],
            "verify": frozenset(help_flags(lambda: verify.main(["--help"]))),
            "adoption-report": frozenset(help_flags(lambda: adoption_report.main(["--help"])))}


@cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    targets = set()
    for line in text.splitlines():
        if match := re.match(r"^([A-Za-z0-9][\w./-]*(?:[ \t]+[A-Za-z0-9][\w./-]*)*)[ \t]*:(?![:=])", line):
            targets.update(match.group(1).split())
        if line.startswith(".PHONY:"):
            targets.update(line.split(":", 1)[1].split())
    return frozenset(targets)


@cache
def tracked_top_level() -> frozenset[str]:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return frozenset(name.split("/")[0] for name in files.splitlines())


# --- reading the docs ------------------------------------------------------------------------------------


def fences(text: str) -> Iterator[tuple[int, int, str, list[str]]]:
    """(index of the opening line, index of the closing line, language, body lines) of each fenced block; a block
    indented under a list item has that indentation taken off."""
    lines = text.splitlines()
    n = 0
    while n < len(lines):
        match = FENCE.match(lines[n])
        if not match:
            n += 1
            continue
        close = re.compile(rf"^[ \t]*{re.escape(match['fence'])}[ \t]*$")
        end = next((k for k in range(n + 1, len(lines)) if close.match(lines[k])), len(lines))
        indent = match["indent"]
        yield n, end, match["lang"], [line[len(indent):] if line.startswith(indent) else line
                                      for line in lines[n + 1:end]]
        n = end + 1


def shell_blocks(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number of its first line, language, text) of each fenced block whose language is a shell's."""
    for start, _, language, body in fences(text):
        if language in SHELL_LANGUAGES:
            yield start + 2, language, "\n".join(body)


def prose(text: str) -> str:
    """The text with every fenced block blanked out, line numbers kept."""
    lines = text.splitlines()
    for start, end, _, _ in fences(text):
        lines[start:end + 1] = [""] * len(lines[start:end + 1])
    return "\n".join(lines)


def commands(block: str, language: str) -> Iterator[tuple[int, list[str]]]:
    """(line offset in the block, tokens) of each simple command. A line ending in a backslash, or leaving a quote
    open, goes on on the next line; a console block's commands are its lines after a `$ ` prompt."""
    pending, first = "", 0
    for n, line in enumerate(block.splitlines()):
        if not pending:
            if language == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            first = n
        text = f"{pending}\n{line}" if pending else line
        if text.endswith("\\"):
            pending = text[:-1]
            continue
        try:
            lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError:  # a quote left open
            pending = text
            continue
        pending = ""
        segment: list[str] = []
        words = iter([*tokens, ";"])
        for token in words:
            if token in SEPARATORS:
                if segment:
                    yield first, segment
                segment = []
            elif token in REDIRECTIONS:  # `< file`, `2> file`: neither a word of the command
                if segment and segment[-1].isdigit():
                    segment.pop()
                next(words, None)
            else:
                segment.append(token)


def clean_path(token: str) -> str | None:
    token = token.strip("\"'.,;:()[]")
    token = token.split("=", 1)[1] if re.match(r"^[A-Za-z_]+=", token) else token
    if not token or NOT_A_PATH.search(token) or token.startswith(("-", "/", "~")):
        return None
    return token if token.split("/")[0] in tracked_top_level() else None


def command_problems(tokens: list[str]) -> Iterator[str]:
    words = list(tokens)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # VAR=value before the command
        words.pop(0)
    if words[:1] == ["sudo"]:
        words.pop(0)
    if not words:
        return
    if words[0] == "make" or words[0].endswith("/make"):
        targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        for target in targets:
            if target not in make_targets():
                yield f"make target {target!r} does not exist in the Makefile"
        for assignment in (w for w in words[1:] if w.startswith("ARGS=")):
            for target in (t for t in targets if t in make_args_flags()):
                for flag in flags_of(shlex.split(assignment[len("ARGS="):])):
                    if flag not in make_args_flags()[target]:
                        yield f"make {target} ARGS: {flag} is not a flag of what make {target} runs"
    if re.search(r"(^|/)python3?$", words[0]) and words[1:3] == ["-m", "lambdas.mirror"]:
        command, *rest = words[3:] or [""]
        if command not in mirror_cli_flags():
            yield f"python -m lambdas.mirror has no command {command!r} ({', '.join(mirror_cli_flags())})"
        else:
            for flag in flags_of(rest):
                if flag not in mirror_cli_flags()[command]:
                    yield f"python -m lambdas.mirror {command}: {flag} is not one of its flags"
    setup = setup_arguments(words)
    if setup is not None:
        for flag in flags_of(setup):
            if flag not in setup_flags():
                yield f"the build-host setup has no flag {flag}"


def flags_of(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if re.match(r"^--?[A-Za-z]", w)]


def path_problems(tokens: list[str]) -> Iterator[str]:
    for token in tokens:
        path = clean_path(token)
        if path is not None and not (ROOT / path).exists():
            yield f"{path} does not exist in the repository"


def problems(text: str, name: str) -> list[str]:
    """Every name in `text` (a markdown file called `name`) that does not exist, one line each."""
    found = []
    for start, language, body in shell_blocks(text):
        for offset, tokens in commands(body, language):
            found += [f"{name}:{start + offset}: {p}" for p in (*command_problems(tokens), *path_problems(tokens))]
    for number, line in enumerate(prose(text).splitlines(), start=1):
        for span in INLINE_CODE.findall(line):
            if re.match(r"^(make|python3?|\.venv/bin/python) ", span):
                for _, tokens in commands(span, "bash"):
                    found += [f"{name}:{number}: {p}" for p in command_problems(tokens)]
            found += [f"{name}:{number}: {p}" for p in path_problems(span.split())]
    return found


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
