"""A config without copies of the build's own images (the buildx builder, the QEMU emulators) gets one synth
warning on the build project, naming the mirror.yaml entries to add."""

from __future__ import annotations

import json

import yaml

from ecr_mirror_cdk.config_parse import load_config, parse_config
from tests.build.conftest import REPO, STACK, synth_build

PYTHON_ONLY = {"images": [{"source": "python", "tags": ["3.13-slim"]}],
               "pull_through_cache": [{"upstream": "docker-hub"}]}
ACK = "@ecr-mirror/build-images"


def warnings(outdir):
    """Every warning annotation in the cloud assembly, by construct path (what `cdk synth` prints)."""
    artifact = json.loads((outdir / "manifest.json").read_text())["artifacts"][STACK]
    metadata = json.loads((outdir / artifact["additionalMetadataFile"]).read_text())
    return {path: [entry["data"] for entry in entries if entry["type"] == "aws:cdk:warning"]
            for path, entries in metadata.items() if any(e["type"] == "aws:cdk:warning" for e in entries)}


def test_a_config_without_the_build_images_warns_once_on_the_project_naming_the_entries(tmp_path):
    synth_build(tmp_path, parse_config(PYTHON_ONLY, origin="team.yaml"))

    [(path, [message])] = warnings(tmp_path).items()
    assert path == f"/{STACK}/Build/Project"
    assert "\n" not in message
    assert message.startswith("team.yaml: images: the build pulls moby/buildkit:buildx-stable-1, "
                              "tonistiigi/binfmt:latest, which the mirror does not copy:")
    assert message.endswith(
        'add to images: - {source: moby/buildkit, tags: ["buildx-stable-1"]}, '
        '- {source: tonistiigi/binfmt, tags: ["latest"]}'
        f" [ack: {ACK}]"  # as `cdk synth` prints it: how to acknowledge the warning
    )


def test_the_entries_the_warning_names_are_mirror_yaml_that_silences_it(tmp_path):
    synth_build(tmp_path / "before", parse_config(PYTHON_ONLY))
    [[message]] = warnings(tmp_path / "before").values()
    # As they would go under `images:`: one YAML flow mapping per list item.
    entries = yaml.safe_load(message.split("add to images: ")[1].removesuffix(f" [ack: {ACK}]")
                             .replace(", - {", "\n- {"))

    synth_build(tmp_path / "after", parse_config({**PYTHON_ONLY, "images": [*PYTHON_ONLY["images"], *entries]}))

    assert warnings(tmp_path / "after") == {}


def test_the_builder_image_under_other_tags_only_still_warns(tmp_path):
    config = {**PYTHON_ONLY, "images": [{"source": "moby/buildkit", "tags": ["v0.12.5"], "tag_regex": r"v0\.13\..*"},
                                        {"source": "tonistiigi/binfmt", "tag_regex": "lat.*"}]}

    synth_build(tmp_path, parse_config(config))

    [[message]] = warnings(tmp_path).values()
    assert "the build pulls moby/buildkit:buildx-stable-1, which the mirror does not copy" in message
    assert "tonistiigi" not in message


def test_the_repositorys_mirror_yaml_synthesizes_without_the_warning(tmp_path):
    synth_build(tmp_path, load_config(REPO / "mirror.yaml"))

    assert warnings(tmp_path) == {}
