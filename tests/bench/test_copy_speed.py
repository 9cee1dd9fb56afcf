"""The copy benchmark's limit: the same image into the destination from memory, printed beside each ratio."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from lambdas.mirror.oci.registry import RegistryClient
from tests.bench import copy_speed
from tests.support.images import push_image
from tests.support.registry import RegistryServer

TINY: dict[str, Any] = dict(kind="oci-index", platforms=("linux/amd64", "linux/arm64"), layers=2, layer_size=4 << 10,
            attestations=True)


@pytest.mark.parametrize("shape", [TINY, dict(kind="docker-v2", layers=2, layer_size=4 << 10)], ids=["index", "single"])
def test_the_limit_puts_the_very_image_the_copies_put(
        shape: dict[str, Any], registry_factory: Callable[..., RegistryServer]) -> None:
    # Given an image in the source, read into memory
    source, destination = registry_factory("source"), registry_factory("destination")
    push_image(source.host, "bench/app", "v1", **shape)
    contents = copy_speed._in_memory(source)

    # When the limit sends it to an empty destination
    seconds = copy_speed._limit(contents, source, destination, "bench/limit")

    # Then the destination holds the same tag, digest for digest, and every blob
    source_info = RegistryClient(source.host).head_manifest("bench/app", "v1")
    copied = RegistryClient(destination.host).head_manifest("bench/limit", "v1")
    assert seconds > 0 and source_info is not None and copied is not None
    assert copied.digest == source_info.digest
    assert all(RegistryClient(destination.host).has_blob("bench/limit", digest) for digest in contents[0])


def test_each_ratio_to_skopeo_is_printed_beside_the_limit(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(copy_speed, "SCENARIOS", {"tiny": TINY})

    figures = copy_speed.run(rounds=1)

    line = capsys.readouterr().out.splitlines()[-1]
    seconds, ratio = r"\d+\.\d{3} s", r"\d+\.\d{2}x"
    assert re.fullmatch(rf"tiny +engine {seconds} = {ratio} \(limit {seconds} = {ratio}\)   as a process {seconds} = "
                        rf"{ratio} \(limit {seconds} = {ratio}\)   skopeo {seconds}   median of 1", line), line
    tiny = figures["tiny"]
    assert tiny["process_limit_ratio"] == pytest.approx((tiny["limit_s"] + tiny["startup_s"]) / tiny["skopeo_s"])
