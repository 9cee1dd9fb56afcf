"""Reading `mirror.yaml`: PyYAML's safe loader, stricter where a config file needs it.

- errors keep their line and column;
- a key given twice in one mapping is refused (YAML 1.2 says keys are unique; PyYAML keeps the last);
- numbers remember the text they were written as, so `tags: [3.10]` (the float 3.1) can be reported
  as `3.10` with the advice to quote it;
- the file must be UTF-8.
Only synth and the CLI import this (and PyYAML); the planner Lambda reads the stored JSON.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, ScalarNode

_MERGE = "tag:yaml.org,2002:merge"


class SourceError(ValueError):
    """The file is not UTF-8 or not valid YAML; the message gives line and column."""


class YamlInt(int):
    text = ""  # as written in the file


class YamlFloat(float):
    text = ""


class _Loader(yaml.SafeLoader):
    pass


def _int(loader: _Loader, node: ScalarNode) -> YamlInt:
    value = YamlInt(SafeConstructor.construct_yaml_int(loader, node))
    value.text = str(node.value)
    return value


def _float(loader: _Loader, node: ScalarNode) -> YamlFloat:
    value = YamlFloat(SafeConstructor.construct_yaml_float(loader, node))
    value.text = str(node.value)
    return value


def _mapping(loader: _Loader, node: MappingNode) -> Iterator[dict[Any, Any]]:
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE:
            continue  # `<<: *defaults` may be overridden by explicit keys, as YAML intends
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable):
            if key in first:
                raise ConstructorError(None, None, f"duplicate key {key!r} (first given on line {first[key] + 1})",
                                       key_node.start_mark)
            first[key] = key_node.start_mark.line
    yield from SafeConstructor.construct_yaml_map(loader, node)


_Loader.add_constructor("tag:yaml.org,2002:int", _int)
_Loader.add_constructor("tag:yaml.org,2002:float", _float)
_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)


def load(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise SourceError(f"line {line}, column {column}: not UTF-8 text (byte 0x{raw[err.start]:02x}); "
                          "save the file as UTF-8") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        context = ""
        if err.context and err.problem:
            started = err.context_mark
            at = f" started on line {started.line + 1}, column {started.column + 1}" if started is not None else ""
            context = f" ({err.context}{at})"
        raise SourceError(f"{where}not valid YAML: {err.problem or err.context}{context}") from None
    except yaml.YAMLError as err:
        raise SourceError(f"not valid YAML: {str(err).splitlines()[0]}") from None
