"""The simulation's Dockerfile model reads image references with the engine's parser (lambdas/mirror/reference.py),
so the fleet sends to the mirror exactly what the product would accept."""

from __future__ import annotations

import json

from lambdas.mirror.reference import ReferenceError, parse
from tests.simulate.dockerfile import MirrorMap, plan

MIRROR = MirrorMap.from_json("mirror.example", json.dumps({"prefixes": {"docker.io": "docker-hub"}}))


def reason_for(image: str) -> str:
    try:
        parse(image)
    except ReferenceError as err:
        return str(err)
    raise AssertionError(f"{image} parses")


def test_an_ordinary_reference_goes_to_the_cache_prefix() -> None:
    redirects, _ = plan("FROM python:3.13-slim\n", MIRROR, {})

    assert [r.target for r in redirects] == ["mirror.example/docker-hub/library/python:3.13-slim"]


def test_a_repository_name_docker_refuses_as_too_long_is_not_redirected_for_the_parsers_reason() -> None:
    image = "team/" + "a" * 250 + ":1"

    redirects, _ = plan(f"FROM {image}\n", MIRROR, {})

    assert [(r.written, r.target, r.reason) for r in redirects] == [(image, None, reason_for(image))]
    assert "longer than 255 characters" in redirects[0].reason


def test_a_tag_outside_the_oci_grammar_is_not_redirected() -> None:
    redirects, _ = plan("FROM python:3.13-\u00e9\n", MIRROR, {})

    assert [(r.target, r.reason) for r in redirects] == [(None, reason_for("python:3.13-\u00e9"))]
