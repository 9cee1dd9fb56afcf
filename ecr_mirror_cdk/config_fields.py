"""The checks every section of `mirror.yaml` shares: each failure is one `ConfigError` naming file, entry and field."""

from __future__ import annotations

import re
from typing import Any

from .config import ConfigError
from .reference import TAG_RE

# An ECR repository name (or a prefix of one): lowercase path components joined by '/'.
ECR_NAME = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")


class Fields:
    """The parser's base: `origin` (the file, or "mirror spec") starts every message."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.origin}: {where}: {message}")

    def mapping(self, value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a mapping, got {type(value).__name__}")
        unknown = sorted(set(value) - allowed, key=str)  # keys may be numbers, or a mix
        if unknown:
            raise self.fail(where, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
        return value

    def string(self, value: Any, where: str) -> str:
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            # YAML reads `3.10` as the number 3.1: the text as written says what to quote.
            text = getattr(value, "text", repr(value))
            read = "" if text == repr(value) else f" (read as {value!r})"
            raise self.fail(where, f"{text} is a YAML number{read}, not a string: quote it, \"{text}\"")
        if isinstance(value, bool):
            raise self.fail(where, f"{value!r} is a YAML boolean (from yes/no/on/off/true/false), not a string: "
                                   "quote it")
        raise self.fail(where, f"must be a non-empty string, got {value!r}")

    def string_list(self, value: Any, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(where, f"must be a list of strings, got {type(value).__name__}")
        return tuple(self.string(v, f"{where}[{i}]") for i, v in enumerate(value))

    def tag_list(self, value: Any, where: str) -> tuple[str, ...]:
        tags = self.string_list(value, where)
        for i, tag in enumerate(tags):
            if not TAG_RE.fullmatch(tag):
                raise self.fail(f"{where}[{i}]", f"{tag!r} is not a tag: 1 to 128 of A-Z a-z 0-9 _ . -, "
                                                 "not starting with . or - (OCI distribution spec)")
        return tags

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, got {value!r}")
        return value

    def integer(self, value: Any, where: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(where, f"must be an integer from {low} to {high}, got {value!r}")
        return value
