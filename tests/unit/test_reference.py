"""Image references normalize as Docker normalizes them."""

import pytest

from ecr_mirror_cdk.reference import ReferenceError, base_url, is_loopback, parse


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("python", "docker.io", "library/python", None, None),
        ("python:3.13-slim", "docker.io", "library/python", "3.13-slim", None),
        ("docker.io/library/python", "docker.io", "library/python", None, None),
        ("index.docker.io/library/python", "docker.io", "library/python", None, None),
        ("user/app:1", "docker.io", "user/app", "1", None),
        ("ghcr.io/org/app", "ghcr.io", "org/app", None, None),
        ("gcr.io/distroless/base-debian12", "gcr.io", "distroless/base-debian12", None, None),
        ("host:5000/x", "host:5000", "x", None, None),
        ("localhost/x:y", "localhost", "x", "y", None),
        ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000", "a/b/c", "t", None),
        ("ghcr.io/o/i@sha256:" + "a" * 64, "ghcr.io", "o/i", None, "sha256:" + "a" * 64),
    ],
)
def test_references_normalize_like_docker(text, registry, repository, tag, digest):
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


def test_a_default_tag_applies_only_without_tag_or_digest():
    assert str(parse("python", default_tag="latest")) == "docker.io/library/python:latest"
    assert parse("python:3", default_tag="latest").tag == "3"


def test_docker_hub_api_host_differs_from_its_name():
    assert parse("python").api_host == "registry-1.docker.io"
    assert parse("quay.io/a/b").api_host == "quay.io"


@pytest.mark.parametrize("text", ["", "Python", "a//b", "ghcr.io/o/i@sha256:short", "x:bad tag", " python", "a/b:"])
def test_malformed_references_are_rejected(text):
    with pytest.raises(ReferenceError):
        parse(text)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1:5000", True), ("127.8.9.1", True), ("localhost:80", True), ("[::1]:5000", True),
     ("registry-1.docker.io", False), ("10.0.0.1:5000", False), ("localhost.example.com", False)],
)
def test_only_loopback_registries_use_plain_http(host, loopback):
    assert is_loopback(host) is loopback
    assert base_url(host).startswith("http://" if loopback else "https://")
