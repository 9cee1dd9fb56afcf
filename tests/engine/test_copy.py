"""copy_image against two real loopback registries, checked with skopeo and the access logs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml

from lambdas.mirror.oci.copy import copy_image, recorded_source_digest
from lambdas.mirror.oci.errors import NoMatchingPlatform
from lambdas.mirror.oci.manifests import PLATFORMS_ANNOTATION, SOURCE_DIGEST_ANNOTATION
from lambdas.mirror.oci.registry import RegistryClient
from tests.engine.checks import missing_content, skopeo_inspect, skopeo_raw_digest
from tests.support.images import DOCKER_LAYER, KINDS, OCI_LAYER, Pusher, descriptor, digest_of, encode, push_image
from tests.support.registry import RegistryServer

Clients = tuple[RegistryClient, RegistryClient]


@pytest.mark.parametrize("kind", KINDS)
def test_every_manifest_kind_arrives_digest_exact(kind: str, source: RegistryServer, destination: RegistryServer,
                                                  clients: Clients) -> None:
    # Given an image of this kind at the source
    digest = push_image(source.host, "team/app", "v1", kind=kind, seed=3)
    # When it is copied
    result = copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1")
    # Then skopeo reads the same digest from the destination, and the image is complete
    assert result.source_digest == result.destination_digest == digest
    assert skopeo_raw_digest(destination.host, "mirror/app", "v1") == digest
    assert skopeo_inspect(destination.host, "mirror/app", "v1").returncode == 0
    assert missing_content(destination.host, "mirror/app", "v1") == []


def test_multi_platform_index_with_attestations_is_copied_whole(source: RegistryServer, destination: RegistryServer,
                                                                clients: Clients) -> None:
    digest = push_image(source.host, "team/app", "v2", platforms=("linux/amd64", "linux/arm64", "linux/arm/v7"),
                        attestations=True, seed=4)
    result = copy_image(clients[0], "team/app", clients[1], "mirror/app", "v2", workers=8)
    assert result.destination_digest == digest
    assert skopeo_raw_digest(destination.host, "mirror/app", "v2") == digest
    assert missing_content(destination.host, "mirror/app", "v2") == []
    # 3 platform manifests + 3 attestation manifests + the index; 2 layers + config each, 2 + config each attestation
    assert result.manifests_put == 7
    assert result.blobs_copied == 3 * 3 + 3 * 3


def test_children_are_pushed_before_parents_and_the_tag_last(source: RegistryServer, destination: RegistryServer,
                                                             clients: Clients) -> None:
    push_image(source.host, "team/app", "v1", attestations=True, seed=5)
    copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1")
    writes = [r for r in destination.requests() if r.method in ("PUT", "PATCH")]
    manifest_puts = [i for i, r in enumerate(writes) if "/manifests/" in r.path]
    blob_puts = [i for i, r in enumerate(writes) if "/blobs/uploads/" in r.path]
    assert max(blob_puts) < min(manifest_puts)
    assert writes[-1].path == "/v2/mirror/app/manifests/v1"
    assert all("/manifests/sha256:" in writes[i].path for i in manifest_puts[:-1])


def test_platform_filter_keeps_matching_platforms_and_their_attestations(
        source: RegistryServer, destination: RegistryServer, clients: Clients) -> None:
    digest = push_image(source.host, "team/app", "v1", platforms=("linux/amd64", "linux/arm64", "linux/arm/v7"),
                        attestations=True, seed=6)
    result = copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1", platforms=["linux/arm64"])
    index = json.loads(clients[1].get_manifest("mirror/app", "v1")[0])
    kept = index["manifests"]
    assert [m["platform"]["architecture"] for m in kept] == ["arm64", "unknown"]
    assert kept[1]["annotations"]["vnd.docker.reference.digest"] == kept[0]["digest"]
    # The rewritten index has its own digest and records the source's
    assert result.source_digest == digest != result.destination_digest
    assert skopeo_raw_digest(destination.host, "mirror/app", "v1") == result.destination_digest
    assert index["annotations"][SOURCE_DIGEST_ANNOTATION] == digest
    assert index["annotations"][PLATFORMS_ANNOTATION] == "linux/arm64"
    assert missing_content(destination.host, "mirror/app", "v1") == []


def test_recorded_source_digest_lets_a_planner_skip_filtered_images(source: RegistryServer, clients: Clients) -> None:
    digest = push_image(source.host, "team/app", "v1", seed=7)
    copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1", platforms=["linux/amd64"])
    copy_image(clients[0], "team/app", clients[1], "mirror/full", "v1")
    assert recorded_source_digest(clients[1], "mirror/app", "v1") == digest
    assert recorded_source_digest(clients[1], "mirror/app", "v1", platforms=["linux/amd64"]) == digest
    assert recorded_source_digest(clients[1], "mirror/app", "v1", platforms=["linux/arm64"]) is None
    assert recorded_source_digest(clients[1], "mirror/full", "v1") == digest
    assert recorded_source_digest(clients[1], "mirror/full", "v1", platforms=["linux/amd64"]) is None
    assert recorded_source_digest(clients[1], "mirror/app", "absent") is None


def test_a_filter_that_keeps_everything_preserves_the_digest(source: RegistryServer, clients: Clients) -> None:
    digest = push_image(source.host, "team/app", "v1", seed=8)
    both = ["linux/amd64", "linux/arm64"]
    result = copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1", platforms=both)
    assert result.destination_digest == digest


def test_a_filter_that_keeps_nothing_fails_without_writing(source: RegistryServer, destination: RegistryServer,
                                                           clients: Clients) -> None:
    push_image(source.host, "team/app", "v1", seed=9)
    with pytest.raises(NoMatchingPlatform):
        copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1", platforms=["linux/s390x"])
    assert not [r for r in destination.requests() if r.method in ("PUT", "POST", "PATCH")]


def test_unchanged_recopy_moves_no_blob_and_gets_only_the_top_manifest(
        source: RegistryServer, destination: RegistryServer, clients: Clients) -> None:
    push_image(source.host, "team/app", "v1", attestations=True, seed=10)
    copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1")
    before = len(source.manifest_gets("team/app"))
    again = copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1")
    assert (again.blobs_copied, again.bytes_copied, again.manifests_put) == (0, 0, 1)
    assert len(source.manifest_gets("team/app")) - before == 1


def test_a_new_tag_sharing_platform_manifests_gets_only_what_is_new(
        source: RegistryServer, clients: Clients) -> None:
    push_image(source.host, "team/app", "v1", platforms=("linux/amd64",), kind="oci-index", seed=11)
    copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1")
    push_image(source.host, "team/app", "v2", platforms=("linux/amd64", "linux/arm64"), seed=11)
    before = len(source.manifest_gets("team/app"))
    result = copy_image(clients[0], "team/app", clients[1], "mirror/app", "v2")
    # Same seed: the amd64 manifest is shared, so only the index and the arm64 manifest are fetched
    assert len(source.manifest_gets("team/app")) - before == 2
    assert result.manifests_put == 2


def test_cross_repository_mount_replaces_the_upload(source: RegistryServer, destination: RegistryServer,
                                                    clients: Clients) -> None:
    push_image(source.host, "team/app", "v1", kind="docker-v2", seed=12)
    push_image(source.host, "team/other", "v1", kind="docker-v2", seed=12)  # same blobs, other repository
    copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1")
    mark = len(destination.requests())
    result = copy_image(clients[0], "team/other", clients[1], "mirror/other", "v1", mount_from=["mirror/app"])
    after = destination.requests()[mark:]
    assert result.blobs_mounted == 3 and result.blobs_copied == 0
    assert [r for r in after if r.method == "POST" and "mount=sha256" in r.path and r.status == 201]
    assert not [r for r in after if r.method == "PATCH"]
    assert not [r for r in source.requests() if r.method == "GET" and "/v2/team/other/blobs/" in r.path]
    assert missing_content(destination.host, "mirror/other", "v1") == []


def test_copy_by_digest_lands_under_the_digest(source: RegistryServer, destination: RegistryServer,
                                               clients: Clients) -> None:
    digest = push_image(source.host, "team/app", "v1", seed=13)
    result = copy_image(clients[0], "team/app", clients[1], "mirror/app", digest)
    assert result.destination_digest == digest
    assert missing_content(destination.host, "mirror/app", digest) == []


def test_layers_bigger_than_a_read_chunk_stream_intact(source: RegistryServer, destination: RegistryServer,
                                                       clients: Clients) -> None:
    digest = push_image(source.host, "team/app", "v1", kind="oci-manifest", layers=3, layer_size=3 << 20, seed=14)
    seen: list[tuple[str, int, int]] = []
    result = copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1",
                        progress=lambda *event: seen.append(event))
    assert result.destination_digest == digest and result.bytes_copied > 9 << 20
    assert {d for d, done, size in seen if done == size} == {d for d, _, _ in seen}
    assert skopeo_inspect(destination.host, "mirror/app", "v1").returncode == 0


def test_counters_show_one_connection_pool_serving_everything(source: RegistryServer, clients: Clients) -> None:
    push_image(source.host, "team/app", "v1", seed=15)
    copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1")
    assert clients[0].counters[("GET", "manifest")] == 3
    assert clients[0].counters[("GET", "blob")] == 6
    assert clients[1].counters[("PUT", "manifest")] == 3


def test_chunked_upload_mode_patches_then_commits(source: RegistryServer, destination: RegistryServer) -> None:
    digest = push_image(source.host, "team/app", "v1", kind="oci-manifest", layer_size=2 << 20, seed=16)
    target = RegistryClient(destination.host, chunked_upload=True)
    result = copy_image(RegistryClient(source.host), "team/app", target, "mirror/app", "v1")
    assert result.destination_digest == digest
    assert target.counters[("PATCH", "upload")] == 3
    assert missing_content(destination.host, "mirror/app", "v1") == []


def test_a_refused_mount_falls_back_to_uploading_into_the_opened_session(
        source: RegistryServer, destination: RegistryServer, clients: Clients) -> None:
    digest = push_image(source.host, "team/app", "v1", kind="docker-v2", seed=17)
    result = copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1", mount_from=["mirror/empty"])
    assert result.destination_digest == digest and (result.blobs_copied, result.blobs_mounted) == (3, 0)
    assert clients[1].counters[("POST", "mount")] == 3 and clients[1].counters[("POST", "upload")] == 0
    assert missing_content(destination.host, "mirror/app", "v1") == []


def test_platform_filter_rewrites_a_docker_manifest_list_too(source: RegistryServer, destination: RegistryServer,
                                                             clients: Clients) -> None:
    digest = push_image(source.host, "team/app", "v1", kind="docker-list", seed=18)
    result = copy_image(clients[0], "team/app", clients[1], "mirror/app", "v1", platforms=["linux/amd64"])
    assert result.destination_digest != digest
    assert recorded_source_digest(clients[1], "mirror/app", "v1", platforms=["linux/amd64"]) == digest
    assert skopeo_inspect(destination.host, "mirror/app", "v1").returncode == 0


@pytest.mark.parametrize(("manifest_type", "config_type", "layer_type"), [
    ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.config.v1+json",
     "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
    ("application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.container.image.v1+json",
     "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
])
def test_layers_served_from_elsewhere_are_not_fetched_and_the_image_still_copies(
        manifest_type: str, config_type: str, layer_type: str, tmp_path: Path) -> None:
    # Given registries that accept layer URLs (distribution refuses them unless allowed), and an
    # image (Windows base images are built this way) whose first layer lives at such a URL, not in the registry
    with _allowing_layer_urls(tmp_path, "source") as source, _allowing_layer_urls(tmp_path, "dest") as destination:
        pusher = Pusher(source.host)
        own = gzip.compress(b"own layer", mtime=0)
        pusher.blob("team/win", own)
        elsewhere = b"a layer the registry never held"
        config = json.dumps({"architecture": "amd64", "os": "windows", "rootfs": {"type": "layers", "diff_ids": []}})
        pusher.blob("team/win", config.encode())
        manifest = encode({"schemaVersion": 2, "mediaType": manifest_type,
                           "config": descriptor(config_type, config.encode()),
                           "layers": [descriptor(layer_type, elsewhere, urls=["https://example.invalid/layer.tgz"]),
                                      descriptor(OCI_LAYER if "oci" in manifest_type else DOCKER_LAYER, own)]})
        digest = pusher.manifest("team/win", "ltsc", manifest, manifest_type)

        # When it is copied
        result = copy_image(RegistryClient(source.host), "team/win", RegistryClient(destination.host), "mirror/win",
                            "ltsc")

        # Then the destination has it digest-exact, with the layers the registry held and nothing else
        assert result.destination_digest == digest
        assert skopeo_raw_digest(destination.host, "mirror/win", "ltsc") == digest
        assert result.blobs_copied == 2  # config and the registry's own layer
        assert [r for r in source.requests() if r.path.endswith(digest_of(elsewhere))] == []


def _allowing_layer_urls(root: Path, name: str) -> RegistryServer:
    server = RegistryServer(root, name=name)
    settings = yaml.safe_load(server.config_path.read_text())
    settings["validation"] = {"manifests": {"urls": {"allow": [r"^https://example\.invalid/"]}}}
    server.config_path.write_text(yaml.safe_dump(settings))
    return server
