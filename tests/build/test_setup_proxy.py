"""The endpoint behind an explicit proxy, as a CodeBuild project in a VPC has one (HTTPS_PROXY, NO_PROXY): a real
docker-registry over TLS, a CONNECT proxy on loopback that counts what it is asked, and the AWS CLI's login."""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
from pathlib import Path

import pytest

from ecr_mirror_cdk.setup.base import SetupError, is_loopback
from ecr_mirror_cdk.setup.ecr import Registry
from tests.build.test_setup_config import MAP
from tests.build.test_setup_endpoint import Endpoint, ecr_login_password, login_registry
from tests.support.busybox import push_busybox
from tests.support.forward_proxy import ForwardProxy
from tests.support.moto import fake_aws_environment, moto_server
from tests.support.tls import self_signed

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")
MANIFEST = "/v2/library/busybox/manifests/latest"


def this_host() -> str:
    """This host's name: it resolves to an address here, and to the setup it is a name, not loopback (so HTTPS)."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except OSError:
        pytest.skip(f"this host's name {name!r} does not resolve")
    if not all(ipaddress.ip_address(address).is_loopback for address in addresses):
        # Test traffic stays on loopback: a name that resolves elsewhere is never a target here.
        pytest.skip(f"this host's name {name!r} resolves to {sorted(addresses)}, not loopback only")
    assert not is_loopback(name)
    return name


@pytest.fixture
def clean_environment(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def tls_registry(registry_factory, tmp_path, clean_environment):
    """docker-registry over HTTPS under this host's name, its certificate trusted through SSL_CERT_FILE; busybox in
    its cache prefix. Returns the registry and busybox's digest."""
    name = this_host()
    certificate, key = self_signed(tmp_path / "tls", name)
    clean_environment.setenv("SSL_CERT_FILE", str(certificate))
    registry = registry_factory("ecr", tls=(certificate, key), hostname=name)
    return registry, push_busybox(registry.url, "docker-hub/library/busybox", "latest", marker="tls")


def pull(registry: Registry, journal: Path) -> tuple[int, str | None, int]:
    """Busybox's manifest and layer through an endpoint in front of `registry`: status, digest, the layer's status."""
    endpoint = Endpoint(registry, MAP, journal)
    try:
        status, headers, body = endpoint.get(MANIFEST)
        if status != 200:
            return status, None, 0
        layer = json.loads(body)["layers"][0]["digest"]
        return status, headers["Docker-Content-Digest"], endpoint.get(f"/v2/library/busybox/blobs/{layer}")[0]
    finally:
        endpoint.stop()


def test_behind_an_explicit_proxy_the_endpoint_pulls_through_a_connect_tunnel_with_the_proxys_credentials(
        tls_registry, tmp_path, clean_environment):
    registry, digest = tls_registry
    with ForwardProxy(credentials=("build", "p@ss:w0rd")) as proxy:
        # Given the project's HTTPS_PROXY, its credentials percent-encoded in the URL
        clean_environment.setenv("HTTPS_PROXY", proxy.url("build:p%40ss%3Aw0rd"))
        # When a build pulls busybox through the endpoint
        status, served, blob = pull(Registry(registry.host), tmp_path / "ep.requests")
    # Then the registry served it, every byte through a tunnel the proxy opened with the build's credentials
    assert (status, served, blob) == (200, digest, 200)
    assert registry.manifest_gets("docker-hub/library/busybox")
    assert proxy.connects() and set(proxy.connects()) == {registry.host}
    assert all(asked.method == "CONNECT" and asked.authorized for asked in proxy.asked)
    assert "p@ss" not in (tmp_path / "ep.requests").read_text()


def test_a_proxy_that_refuses_the_credentials_is_one_line_that_names_the_proxy_but_not_the_credentials(
        tls_registry, clean_environment):
    registry, _ = tls_registry
    with ForwardProxy(credentials=("build", "right")) as proxy:
        clean_environment.setenv("https_proxy", proxy.url("build:wrong-secret"))  # lowercase, as curl writes it
        with pytest.raises(SetupError) as refused:
            Registry(registry.host).check()
    assert str(refused.value) == (f"registry {registry.host} is unreachable through the proxy {proxy.address} "
                                  "(HTTPS_PROXY): Tunnel connection failed: 407 Proxy Authentication Required")
    assert proxy.connects() == [registry.host] * 2  # the first attempt, and the retry on a fresh connection


@pytest.mark.parametrize("variable, value", [
    ("NO_PROXY", "{name}"),
    ("no_proxy", "build.example, .{name}"),  # a DNS suffix, with the leading dot urllib ignores
    ("NO_PROXY", "*"),
])
def test_a_registry_no_proxy_names_is_reached_directly(variable, value, tls_registry, tmp_path, clean_environment):
    registry, digest = tls_registry
    with ForwardProxy() as proxy:
        clean_environment.setenv("HTTPS_PROXY", proxy.url())
        clean_environment.setenv(variable, value.format(name=registry.host.split(":")[0]))
        status, served, _ = pull(Registry(registry.host), tmp_path / "ep.requests")
    assert (status, served) == (200, digest)
    assert proxy.asked == []


def test_a_loopback_registry_is_never_sent_to_the_proxy(registry, tmp_path, clean_environment):
    digest = push_busybox(registry.host, "docker-hub/library/busybox", "latest", marker="m")
    with ForwardProxy() as proxy:
        clean_environment.setenv("HTTPS_PROXY", proxy.url())
        clean_environment.setenv("HTTP_PROXY", proxy.url())
        status, served, _ = pull(Registry(registry.host), tmp_path / "ep.requests")
    assert (status, served) == (200, digest)
    assert proxy.asked == []


def test_the_ecr_login_goes_through_the_proxy_as_the_aws_cli_does_for_every_command(
        registry_factory, tmp_path, clean_environment):
    """`aws ecr get-login-password` inherits the endpoint's environment: botocore proxies moto's plain-HTTP URL
    through HTTP_PROXY (in CodeBuild, ECR's HTTPS URL through HTTPS_PROXY)."""
    with moto_server() as moto:
        for key, value in fake_aws_environment(moto).items():
            clean_environment.setenv(key, value)
        clean_environment.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
        ecr, digest = login_registry(registry_factory, tmp_path, ecr_login_password(moto))
        with ForwardProxy() as proxy, clean_environment.context() as proxied:
            proxied.setenv("HTTP_PROXY", proxy.url())
            proxied.setenv("HTTPS_PROXY", proxy.url())
            status, served, _ = pull(Registry(ecr.host), tmp_path / "ep.requests")
    assert (status, served) == (200, digest)
    assert [(asked.method, asked.target.startswith(moto)) for asked in proxy.asked] == [("POST", True)]
