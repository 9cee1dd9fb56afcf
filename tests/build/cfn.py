"""Just enough of CloudFormation's intrinsic functions to read a synthesized template's values back."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
PSEUDO = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}


def resolve(value: Any, refs: Mapping[str, str] | None = None) -> Any:
    """Ref, Fn::GetAtt (as refs["Id.Attr"]), Fn::Join, Fn::Sub, Fn::Select and Fn::Split; KeyError if unknown."""
    known = {**PSEUDO, **(refs or {})}
    if isinstance(value, list):
        return [resolve(v, refs) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1 or not next(iter(value)).startswith(("Ref", "Fn::")):
        return {k: resolve(v, refs) for k, v in value.items()}
    (function, argument), = value.items()
    if function == "Ref":
        return known[argument]
    if function == "Fn::GetAtt":
        return known[".".join(argument)]
    if function == "Fn::Join":
        separator, parts = argument
        return separator.join(str(resolve(p, refs)) for p in parts)
    if function == "Fn::Sub":
        text = argument if isinstance(argument, str) else argument[0]
        return re.sub(r"\$\{([^}!]+)\}", lambda m: known[m[1]], text)
    if function == "Fn::Select":
        index, items = argument
        return resolve(items, refs)[int(index)]
    if function == "Fn::Split":
        separator, text = argument
        return str(resolve(text, refs)).split(separator)
    raise KeyError(f"unsupported intrinsic {function}")


def project(template: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The one CodeBuild project: its logical id and properties."""
    found = [(k, r["Properties"]) for k, r in template["Resources"].items() if r["Type"] == "AWS::CodeBuild::Project"]
    assert len(found) == 1, found
    return found[0]


def buildspec(template: Mapping[str, Any], refs: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The buildspec as CodeBuild reads it from the project (JSON is YAML, so CodeBuild takes it as is)."""
    return json.loads(resolve(project(template)[1]["Source"]["BuildSpec"], refs))


def environment(template: Mapping[str, Any], refs: Mapping[str, str] | None = None) -> dict[str, str]:
    variables = project(template)[1]["Environment"].get("EnvironmentVariables", [])
    assert all(v.get("Type", "PLAINTEXT") == "PLAINTEXT" for v in variables)
    return {v["Name"]: str(resolve(v["Value"], refs)) for v in variables}
