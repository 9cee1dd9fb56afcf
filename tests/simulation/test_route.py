"""Where the fleet sends each pull: the images a Dockerfile names (tests/simulate/dockerfile.py), read with the
engine's parser (ecr_mirror_cdk/reference.py), so the fleet asks the mirror exactly what the product would accept;
mirrored, every pull goes to the build host's endpoint by its Docker Hub path, with Docker Hub as the fallback."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from ecr_mirror_cdk.reference import ReferenceError, parse
from tests.simulate.fleet import DOCKERFILES, Build
from tests.simulate.run import Fleet, Mode

HUB, ENDPOINT = "127.0.0.1:5001", "127.0.0.1:5002"


def fleet(mode: Mode) -> Fleet:
    world: Any = SimpleNamespace(hub=SimpleNamespace(limiter=SimpleNamespace(host=HUB)),
                                 mirror=SimpleNamespace(endpoint=SimpleNamespace(host=ENDPOINT)))
    return Fleet(world, mode, [("ci", "token")])


def reason_for(image: str) -> str:
    try:
        parse(image)
    except ReferenceError as err:
        return str(err)
    raise AssertionError(f"{image} parses")


def test_mirrored_a_base_and_a_test_image_go_to_the_endpoint_by_their_docker_hub_paths() -> None:
    # Given a service whose Dockerfile builds its tag from an ARG, and whose tests `docker run` postgres
    build = Build(1, 0.0, "orders-api", "linux/amd64")

    bases = fleet(Mode.MIRRORED).route(build)

    # Then both are asked of the endpoint as dockerd sends them, and fall back to Docker Hub anonymously
    assert [(b.host, b.repository, b.reference, b.test_run) for b in bases] == [
        (ENDPOINT, "library/python", "3.12-slim", False), (ENDPOINT, "library/postgres", "16-alpine", True)]
    assert all(b.fallback is not None and (b.fallback.host, b.fallback.username) == (HUB, None) for b in bases)


def test_logged_in_every_pull_goes_to_docker_hub_with_the_account() -> None:
    bases = fleet(Mode.LOGGED_IN).route(Build(1, 0.0, "orders-api", "linux/amd64"))

    assert {(b.host, b.username, b.fallback) for b in bases} == {(HUB, "ci", None)}


@pytest.mark.parametrize("image, reason", [
    ("team/" + "a" * 250 + ":1", "longer than 255 characters"),
    ("python:3.13-\u00e9", ""),
])
def test_a_reference_docker_refuses_stops_the_route_with_the_parsers_reason(
        monkeypatch: pytest.MonkeyPatch, image: str, reason: str) -> None:
    # Given a Dockerfile naming an image the engine's parser refuses
    monkeypatch.setitem(DOCKERFILES, "odd", f"FROM {image}\n")

    # Then the fleet does not route it, and says why as the parser does
    with pytest.raises(ReferenceError) as caught:
        fleet(Mode.MIRRORED).route(Build(1, 0.0, "odd", "linux/amd64"))
    assert str(caught.value) == reason_for(image) and reason in str(caught.value)
