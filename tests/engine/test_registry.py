"""RegistryClient basics against a real registry: tags, HEADs, blobs, headers."""

from __future__ import annotations

import email.utils
import time

import pytest

from lambdas.mirror.oci.errors import RegistryError
from lambdas.mirror.oci.ratelimit import RateLimit
from lambdas.mirror.oci.ratelimit import retry_after as _retry_after
from lambdas.mirror.oci.registry import RegistryClient, _next_link
from tests.support.images import DOCKER_MANIFEST, push_image
from tests.support.registry import RegistryServer


def test_rate_limit_headers_parse_to_numbers() -> None:
    headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600"}
    assert RateLimit.from_headers(headers) == RateLimit(100, 0, None)
    assert RateLimit.from_headers({}) is None


def test_list_tags_lists_every_tag(source: RegistryServer) -> None:
    for tag in ("a", "b", "c", "d", "e"):
        push_image(source.host, "team/app", tag, kind="docker-v2", seed=60)
    # distribution 2.8 ignores `n` and answers in one page; the Link parsing is tested below
    assert sorted(RegistryClient(source.host).list_tags("team/app", page_size=2)) == ["a", "b", "c", "d", "e"]


def test_link_header_yields_the_next_page_url() -> None:
    current = "https://r.example/v2/a/tags/list?n=2"
    assert _next_link('</v2/a/tags/list?last=b&n=2>; rel="next"', current) == (
        "https://r.example/v2/a/tags/list?last=b&n=2")
    assert _next_link(None, current) is None


def test_list_tags_of_an_unknown_repository_is_a_404(source: RegistryServer) -> None:
    with pytest.raises(RegistryError) as missing:
        RegistryClient(source.host).list_tags("team/nothing")
    assert missing.value.status == 404


def test_head_manifest_reports_digest_type_and_size_without_a_get(source: RegistryServer) -> None:
    digest = push_image(source.host, "team/app", "v1", kind="docker-v2", seed=61)
    client = RegistryClient(source.host)
    info = client.head_manifest("team/app", "v1")
    assert info is not None and (info.digest, info.media_type) == (digest, DOCKER_MANIFEST) and info.size > 0
    assert client.head_manifest("team/app", "v2") is None
    assert source.manifest_gets() == []


def test_get_manifest_by_digest_returns_the_exact_bytes(source: RegistryServer) -> None:
    digest = push_image(source.host, "team/app", "v1", seed=62)
    body, info = RegistryClient(source.host).get_manifest("team/app", digest)
    assert info.digest == digest and info.size == len(body)


def test_blob_presence_and_streaming(source: RegistryServer) -> None:
    digest = push_image(source.host, "team/app", "v1", kind="docker-v2", layers=1, layer_size=3 << 20, seed=63)
    client = RegistryClient(source.host)
    body, _ = client.get_manifest("team/app", digest)
    import json

    layer = json.loads(body)["layers"][0]
    assert client.has_blob("team/app", layer["digest"])
    assert not client.has_blob("team/app", "sha256:" + "0" * 64)
    with client.open_blob("team/app", layer["digest"], layer["size"]) as reader:
        assert reader.read_all() == layer["size"]


def test_list_tags_refuses_a_link_that_loops_back() -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class LoopingTags(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = json.dumps({"name": "team/app", "tags": ["a"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Link", '</v2/team/app/tags/list?n=1000>; rel="next"')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), LoopingTags)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(RegistryError, match="pagination loops"):
            RegistryClient(f"127.0.0.1:{server.server_port}").list_tags("team/app")
    finally:
        server.shutdown()
        server.server_close()


def test_retry_after_is_whole_seconds_rounded_up_from_seconds_or_an_http_date() -> None:
    soon = email.utils.formatdate(time.time() + 90.4, usegmt=True)

    assert _retry_after("12.2") == 13.0
    assert _retry_after("0") == 0.0
    assert _retry_after(soon) in (90.0, 91.0)  # the date has whole seconds; a second may pass meanwhile
    assert _retry_after("soon") is None
