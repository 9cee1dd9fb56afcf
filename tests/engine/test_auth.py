"""Bearer token flow against a token-auth registry, and blob redirects that must not leak credentials."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from lambdas.mirror.oci.auth import parse_challenge
from lambdas.mirror.oci.copy import copy_image
from lambdas.mirror.oci.errors import RegistryError
from lambdas.mirror.oci.registry import RegistryClient
from tests.engine.checks import missing_content, skopeo_raw_digest
from tests.support.images import push_image
from tests.support.registry import RegistryServer
from tests.support.token_issuer import TokenIssuer


def test_challenge_parsing_keeps_commas_inside_quotes() -> None:
    challenge = parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                                'scope="repository:a/b:pull,push"')
    assert challenge is not None and challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://auth.example/token", "service": "reg",
                                "scope": "repository:a/b:pull,push"}


def test_credentialed_bearer_flow_pushes_and_caches_tokens_per_scope(
        source: RegistryServer, registry_factory: Callable[..., RegistryServer], token_issuer: TokenIssuer) -> None:
    # Given a registry that trusts the issuer, where only alice may push
    secured = registry_factory("secured", auth=token_issuer.registry_auth())
    digest = push_image(source.host, "team/app", "v1", attestations=True, seed=20)
    destination = RegistryClient(secured.host, username="alice", password="wonderland")
    # When the engine copies into it
    result = copy_image(RegistryClient(source.host), "team/app", destination, "mirror/app", "v1")
    # Then the image is there, digest-exact, and a handful of tokens served dozens of requests
    assert result.destination_digest == digest
    assert {r["user"] for r in token_issuer.requests} == {"alice"}
    assert len(token_issuer.requests) <= 2 < sum(destination.counters.values()) // 10
    assert any("repository:mirror/app:pull,push" in r["scopes"] for r in token_issuer.requests)
    assert skopeo_raw_digest_with_creds(secured.host, "mirror/app", "v1") == digest


def skopeo_raw_digest_with_creds(host: str, repository: str, tag: str) -> str:
    import hashlib
    import subprocess

    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--creds", "alice:wonderland",
                          f"docker://{host}/{repository}:{tag}"], capture_output=True, check=True, timeout=30)
    return "sha256:" + hashlib.sha256(out.stdout).hexdigest()


def test_anonymous_bearer_pull_works_and_push_is_refused(registry_factory: Callable[..., RegistryServer],
                                                         destination: RegistryServer,
                                                         token_issuer: TokenIssuer) -> None:
    secured = registry_factory("secured", auth=token_issuer.registry_auth())
    digest = push_image(secured.host, "team/app", "v1", seed=21, username="alice", password="wonderland")
    anonymous = RegistryClient(secured.host)
    result = copy_image(anonymous, "team/app", RegistryClient(destination.host), "mirror/app", "v1")
    assert result.destination_digest == digest == skopeo_raw_digest(destination.host, "mirror/app", "v1")
    assert {r["user"] for r in token_issuer.requests if r["scopes"] == ["repository:team/app:pull"]} == {None}
    with pytest.raises(RegistryError) as refused:
        anonymous.put_manifest("team/app", "v2", b"{}", "application/vnd.oci.image.manifest.v1+json")
    assert refused.value.status == 401


def test_wrong_credentials_fail_with_a_registry_error(registry_factory: Callable[..., RegistryServer],
                                                      token_issuer: TokenIssuer) -> None:
    secured = registry_factory("secured", auth=token_issuer.registry_auth())
    with pytest.raises(RegistryError) as failed:
        RegistryClient(secured.host, username="alice", password="nope").head_manifest("team/app", "v1")
    assert failed.value.status == 401


def test_a_token_endpoint_that_refuses_names_the_credential_used_and_never_the_secret(
        registry_factory: Callable[..., RegistryServer], token_issuer: TokenIssuer) -> None:
    secured = registry_factory("secured", auth=token_issuer.registry_auth())
    password = secrets.token_urlsafe(16)  # drawn per run: no credential literal in the source
    client = RegistryClient(secured.host, username="alice", password=password,
                            credentials_from="secret ecr-pullthroughcache/docker-hub")

    with pytest.raises(RegistryError) as failed:
        client.head_manifest("team/app", "v1")

    assert "refused user 'alice' from secret ecr-pullthroughcache/docker-hub (HTTP 401)" in str(failed.value)
    assert password not in str(failed.value)


class _RedirectingRealm:
    """A token realm that moved: every request gets a 307 to the issuer, query string kept."""

    def __init__(self, target: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                query = self.path.partition("?")[2]
                self.send_response(307)
                self.send_header("Location", f"{target}?{query}")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_token_realm_that_redirects_is_followed_without_forwarding_credentials(
        registry_factory: Callable[..., RegistryServer], token_issuer: TokenIssuer) -> None:
    # Given a registry whose challenge names a realm that redirects to the issuer
    realm = _RedirectingRealm(token_issuer.realm)
    try:
        auth = token_issuer.registry_auth()
        auth["token"]["realm"] = realm.url
        secured = registry_factory("secured", auth=auth)
        client = RegistryClient(secured.host, username="alice", password="wonderland")
        # When the engine asks for a manifest, Then a token from the issuer behind the redirect gets it an
        # answer, and the credentials stayed with the realm's origin (anonymous at the other port)
        assert client.head_manifest("team/app", "v1") is None
        assert [r["user"] for r in token_issuer.requests] == [None]
    finally:
        realm.stop()


class _Cdn:
    """Serves the registry's storage directory, as S3 or CloudFront would, and records headers."""

    def __init__(self, root: Path) -> None:
        self.headers: list[dict[str, str]] = []
        cdn = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                cdn.headers.append(dict(self.headers.items()))
                super().do_GET()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://localhost:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def redirecting_registry(tmp_path: Path, token_issuer: TokenIssuer) -> Iterator[tuple[RegistryServer, _Cdn]]:
    server = RegistryServer(tmp_path / "redirecting", name="redirecting", auth=token_issuer.registry_auth())
    cdn = _Cdn(server.root / "redirecting-data")
    config = yaml.safe_load(server.config_path.read_text())
    config["middleware"] = {"storage": [{"name": "redirect", "options": {"baseurl": cdn.url}}]}
    server.config_path.write_text(yaml.safe_dump(config))
    server.start()
    yield server, cdn
    server.stop()
    cdn.stop()


def test_blob_redirects_are_followed_without_forwarding_authorization(
        redirecting_registry: tuple[RegistryServer, _Cdn], destination: RegistryServer) -> None:
    # Given a registry that sends blob downloads to another host, behind token auth
    server, cdn = redirecting_registry
    digest = push_image(server.host, "team/app", "v1", seed=22, username="alice", password="wonderland")
    source = RegistryClient(server.host, username="alice", password="wonderland")
    # When the engine copies from it
    result = copy_image(source, "team/app", RegistryClient(destination.host), "mirror/app", "v1")
    # Then every blob came from the CDN, which never saw the registry's token
    assert result.destination_digest == digest and result.blobs_copied == 6
    assert len(cdn.headers) == 6
    assert not [h for h in cdn.headers if "Authorization" in h]
    assert source.counters[("GET", "redirect")] == 6
    assert missing_content(destination.host, "mirror/app", "v1") == []
