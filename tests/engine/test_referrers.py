"""referrers.find and the referrers tag against loopback registries: what the verifier and the copier see."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from lambdas.mirror.oci.errors import RegistryError
from lambdas.mirror.oci.referrers import add_to_fallback_index, fallback_tag, find
from lambdas.mirror.oci.registry import RegistryClient
from tests.support.cosign_layout import new_key, sign_classic
from tests.support.faults import FaultProxy
from tests.support.images import OCI_INDEX, OCI_MANIFEST, Pusher, push_artifact, push_image
from tests.support.registry import RegistryServer


def test_find_lists_the_referrers_tag_and_cosign_signature_with_heads_and_one_get(
        source: RegistryServer) -> None:
    digest = push_image(source.host, "team/app", "v1", seed=81)
    sbom = push_artifact(source.host, "team/app", digest, b'{"spdxVersion":"SPDX-2.3"}')
    signature = sign_classic(source.host, "team/app", digest, new_key())
    client = RegistryClient(source.host)

    found = find(client, "team/app", digest)

    assert [(r.digest, r.tag, r.artifact_type) for r in found] == [
        (sbom, None, "application/spdx+json"), (signature, f"{fallback_tag(digest)}.sig", None)]
    # the referrers API (404 here), a HEAD and a GET of the referrers tag, and three free HEADs of cosign's tags
    assert (client.counters[("GET", "referrers")], client.counters[("GET", "manifest")],
            client.counters[("HEAD", "manifest")]) == (1, 1, 4)


def test_find_follows_every_page_of_the_referrers_api(
        source: RegistryServer, fault_proxy: Callable[[str], FaultProxy]) -> None:
    digest = push_image(source.host, "team/app", "v1", seed=82)
    front = fault_proxy(source.host)
    pages = [[{"mediaType": OCI_MANIFEST, "digest": f"sha256:{n:064x}", "size": 100, "artifactType": "x/y"}]
             for n in (1, 2)]
    front.add("status", rf"/referrers/{digest}\?n=1", times=-1, status=200,
              body=json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": pages[1]}).encode())
    front.add("status", rf"/referrers/{digest}$", times=-1, status=200,
              body=json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": pages[0]}).encode(),
              headers={"Link": f'</v2/team/app/referrers/{digest}?n=1&last=a>; rel="next"'})

    found = find(RegistryClient(front.host), "team/app", digest)

    assert [r.digest for r in found] == [f"sha256:{1:064x}", f"sha256:{2:064x}"]


def test_a_referrers_tag_that_is_not_an_index_means_no_referrers_and_is_never_overwritten(
        destination: RegistryServer) -> None:
    digest = push_image(destination.host, "team/app", "v1", seed=83)
    impostor = push_image(destination.host, "team/app", fallback_tag(digest), kind="oci-manifest", seed=84)
    client = RegistryClient(destination.host)
    entry = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "d" * 64, "size": 10, "artifactType": "x/y"}

    assert find(client, "team/app", digest) == []
    with pytest.raises(RegistryError, match="is not an image index; its referrers list is left as it is"):
        add_to_fallback_index(client, "team/app", digest, [entry])
    assert client.head_manifest("team/app", fallback_tag(digest)).digest == impostor  # type: ignore[union-attr]


def test_the_referrers_tag_is_started_then_appended_to_without_duplicates(destination: RegistryServer) -> None:
    digest = push_image(destination.host, "team/app", "v1", seed=85)
    client = RegistryClient(destination.host)
    # distribution 2.8 takes an index only when what it lists is there: two real manifests stand in
    first, second = ({"mediaType": OCI_MANIFEST, "artifactType": "x/y", "digest": d,
                      "size": len(Pusher(destination.host).get_manifest("team/app", d))}
                     for d in (push_image(destination.host, "team/app", f"a{n}", kind="oci-manifest", seed=n)
                               for n in (86, 87)))

    added = [add_to_fallback_index(client, "team/app", digest, entries) for entries in ([first], [first, second])]

    index = json.loads(Pusher(destination.host).get_manifest("team/app", fallback_tag(digest)))
    assert added == [1, 1]
    assert index["mediaType"] == OCI_INDEX
    assert [m["digest"] for m in index["manifests"]] == [first["digest"], second["digest"]]
