"""The closing report (`--report`): a real dockerd's pulls through the mirror, from a registry that is not Docker Hub,
and from Docker Hub (a loopback stand-in, tests/support/docker_hub.py) after the endpoint stopped; then the logic
that sorts dockerd's pulls, with in-memory fakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecr_mirror_cdk.setup.endpoint import state_files, stop_endpoint
from ecr_mirror_cdk.setup.events import DaemonUnavailable, Pull, PullRecord, unmirrored
from ecr_mirror_cdk.setup.mirror_map import MirrorMap
from ecr_mirror_cdk.setup.report import NOT_SEEN, Probe, SetupRecord, report
from ecr_mirror_cdk.setup_archive import write_setup_archive
from tests.build.host import Host, needs_dockerd
from tests.support import dockerd
from tests.support.busybox import push_busybox
from tests.support.docker_hub import DockerHub

MAP = MirrorMap.parse(json.dumps({"prefixes": {"docker.io": "docker-hub", "quay.io": "quay"}}))


@pytest.fixture
def world(registry_factory, tmp_path):
    """The mirror's registry (busybox for docker.io), a registry that is not Docker Hub, and Docker Hub's stand-in."""
    mirror, other, hub_registry = registry_factory("ecr"), registry_factory("other"), registry_factory("hub")
    push_busybox(mirror.host, "docker-hub/library/busybox", "latest", marker="mirror")
    push_busybox(other.host, "tools/app", "1", marker="other")
    for name in ("busybox", "alpine"):
        push_busybox(hub_registry.host, f"library/{name}", "latest", marker=f"hub {name}")
    hub = DockerHub(hub_registry, tmp_path)
    daemon = dockerd.DockerDaemon(environ=hub.env).start()
    host = Host(daemon, mirror, write_setup_archive(tmp_path / "setup_mirror.py"))
    yield host, other, hub_registry
    stop_endpoint(host.endpoint_pidfile)
    daemon.stop()
    hub.stop()


def marker(host: Host, image: str) -> str:
    return host.daemon.docker("run", "--rm", "--network", "none", image, "cat", "/etc/marker").stdout


@needs_dockerd
def test_the_report_names_each_pull_that_skipped_the_mirror_with_why_and_counts_the_one_that_did_not(world):
    host, other, hub = world
    # Given a host the setup pointed at the mirror
    assert host.setup().returncode == 0
    endpoint = json.loads(state_files(host.endpoint_pidfile)["setup"].read_text())["endpoint"]

    # When the build pulls busybox from Docker Hub, an image from a registry that is not Docker Hub, Docker Hub's
    # busybox by its registry-1.docker.io name, and alpine from Docker Hub after the endpoint stopped
    host.daemon.docker("pull", "busybox")
    host.daemon.docker("pull", f"{other.host}/tools/app:1")
    host.daemon.docker("pull", "registry-1.docker.io/library/busybox")
    stop_endpoint(host.endpoint_pidfile)
    host.daemon.docker("pull", "alpine")
    result = host.setup("--report")

    # Then each image came from where the report says: the mirror, the other registry, and Docker Hub's stand-in
    assert [marker(host, image) for image in ("busybox", f"{other.host}/tools/app:1",
                                              "registry-1.docker.io/library/busybox", "alpine")] == \
        ["mirror", "other", "hub busybox", "hub alpine"]
    # and the report counts the pull through the mirror and names the three others, with why, in one line
    line = result.stdout
    assert result.returncode == 0 and line.count("\n") == 1, result.stderr
    assert line.startswith(
        f"mirror: 1 manifests served by the mirror (docker.io 1); the endpoint {endpoint} is down (its process has "
        "ended); dockerd pulled 4 images since the setup, 1 through the mirror, 3 not: "
        f"{other.host}/tools/app:1 ({other.host} is not Docker Hub, and dockerd mirrors Docker Hub only); "
        "registry-1.docker.io/library/busybox:latest (written registry-1.docker.io/..., which dockerd does not "
        "mirror: write docker.io/...); alpine:latest (Docker Hub, but dockerd never asked the mirror: the endpoint "
        "is down); "), line
    assert line.endswith(f"; {NOT_SEEN}\n")


# --- sorting dockerd's pulls, with fakes ----------------------------------------------------------------

SERVED = {"served": True, "method": "HEAD", "upstream": "docker.io", "image": "library/busybox", "reference": "latest",
          "repository": "docker-hub/library/busybox"}


@pytest.mark.parametrize(("shown", "domain", "path", "references"), [
    ("busybox:latest", "docker.io", "library/busybox", ("latest",)),
    ("myorg/app:2", "docker.io", "myorg/app", ("2",)),
    ("busybox:1@sha256:ab", "docker.io", "library/busybox", ("1", "sha256:ab")),
    ("busybox@sha256:ab", "docker.io", "library/busybox", ("sha256:ab",)),
    ("index.docker.io/library/busybox:1", "docker.io", "library/busybox", ("1",)),
    ("quay.io/org/app:1", "quay.io", "org/app", ("1",)),
    ("localhost/app:1", "localhost", "app", ("1",)),
    ("127.0.0.1:5000/tools/app", "127.0.0.1:5000", "tools/app", ()),
    ("registry-1.docker.io/library/busybox:latest", "registry-1.docker.io", "library/busybox", ("latest",)),
])
def test_a_pulled_reference_is_read_as_distribution_normalizes_it(shown, domain, path, references):
    assert Pull.of(shown) == Pull(shown, domain, path, references)


def sort(*shown: str, journal=(SERVED,), never_asked: str = "") -> tuple[int, dict[str, str]]:
    return unmirrored([Pull.of(s) for s in shown], list(journal), mirror=MAP, registries=["ecr.example"],
                      endpoint="127.0.0.1:5", never_asked=never_asked)


def test_a_docker_hub_pull_the_endpoint_served_a_manifest_of_came_through_the_mirror():
    by_digest = {**SERVED, "method": "GET", "reference": "sha256:ab"}
    assert sort("busybox:latest", "busybox@sha256:ab", "busybox:latest", journal=[SERVED, by_digest]) == (2, {})


def test_pulls_from_the_mirrors_registry_or_the_endpoint_count_as_the_mirror():
    assert sort("ecr.example/docker-hub/library/busybox:1", "127.0.0.1:5/library/busybox:1") == (2, {})


def test_a_docker_hub_pull_the_endpoint_never_saw_is_named_with_the_known_cause():
    assert sort("alpine:3", never_asked="the endpoint is down") == (
        0, {"alpine:3": "Docker Hub, but dockerd never asked the mirror: the endpoint is down"})
    assert sort("busybox:1") == (0, {"busybox:1": "Docker Hub, but dockerd never asked the mirror"})


def test_a_docker_hub_pull_the_mirror_could_not_serve_is_named():
    fell_back = {"served": False, "method": "GET", "kind": "manifests", "upstream": "docker.io",
                 "image": "library/nope", "reference": "1", "reason": "404"}
    blob = {**fell_back, "kind": "blobs", "image": "library/other", "reference": "sha256:cd"}
    assert sort("nope:1", "other@sha256:cd", journal=[fell_back, blob]) == (0, {
        "nope:1": "asked of the mirror, which could not serve it",
        "other@sha256:cd": "Docker Hub, but dockerd never asked the mirror"})


def test_other_registries_are_named_as_not_docker_hub_with_the_mirrors_repository_when_it_holds_them():
    assert sort("quay.io/org/app:1", "ghcr.io/org/app:1", "registry-1.docker.io/library/busybox:latest") == (0, {
        "quay.io/org/app:1": "quay.io is not Docker Hub, and dockerd mirrors Docker Hub only; pull "
                             "ecr.example/quay/org/app to use the mirror",
        "ghcr.io/org/app:1": "ghcr.io is not Docker Hub, and dockerd mirrors Docker Hub only",
        "registry-1.docker.io/library/busybox:latest": "written registry-1.docker.io/..., which dockerd does not "
                                                       "mirror: write docker.io/..."})


# --- the report's line, with a fake host --------------------------------------------------------------------


class FakeProbe(Probe):
    def __init__(self, pulls: list[str], *, down: str | None = None, mirrors: list[str] | None = None,
                 complete: bool = True, daemon_running: bool = True, unavailable: str = "") -> None:
        self.record = PullRecord([Pull.of(p) for p in pulls], complete)
        self.down, self.daemon_mirrors, self.daemon_running = down, mirrors, daemon_running
        self.unavailable = unavailable
        self.asked: list[tuple[str, float]] = []

    def endpoint_down(self, pidfile: Path, address: str) -> str | None:
        return self.down

    def pulls(self, api: str, since: float, until: float) -> PullRecord:
        if self.unavailable:
            raise DaemonUnavailable(self.unavailable)
        self.asked.append((api, since))
        return self.record

    def mirrors(self, api: str) -> list[str]:
        return ["http://127.0.0.1:5"] if self.daemon_mirrors is None else self.daemon_mirrors

    def running(self, pid: int) -> bool:
        return self.daemon_running


@pytest.fixture
def build(tmp_path) -> Path:
    """A build's state after a setup: the record, and a journal of one manifest served."""
    pidfile = tmp_path / "ep.pid"
    state = state_files(pidfile)
    SetupRecord(1000.5, "127.0.0.1:5", "unix:///d.sock", 42, ["ecr.example"], json.dumps({
        "prefixes": {"docker.io": "docker-hub", "quay.io": "quay"}})).write(state["setup"])
    state["journal"].write_text(json.dumps({**SERVED, "method": "GET"}) + "\n")
    return pidfile


def test_a_build_whose_pulls_all_came_through_the_mirror_says_so(build):
    probe = FakeProbe(["busybox:latest"])
    assert report(build, probe) == (
        "mirror: 1 manifests served by the mirror (docker.io 1); dockerd pulled 1 images since the setup, all "
        f"through the mirror; no request fell back to the upstream; {NOT_SEEN}")
    assert probe.asked == [("unix:///d.sock", 1000.5)]  # dockerd's record since the setup


def test_the_listing_is_bounded_and_counts_the_rest(build):
    line = report(build, FakeProbe([f"ghcr.io/org/app{n}:1" for n in range(8)]))
    assert "dockerd pulled 8 images since the setup, 0 through the mirror, 8 not: ghcr.io/org/app0:1 (" in line
    assert "ghcr.io/org/app4:1" in line and "app5" not in line and "; and 3 more; " in line
    assert "no request fell back" not in line


def test_a_mirror_dockerd_no_longer_lists_is_the_cause_of_what_it_never_asked(build):
    line = report(build, FakeProbe(["busybox:latest", "alpine:3"], mirrors=[]))
    assert "1 through the mirror, 1 not: alpine:3 (Docker Hub, but dockerd never asked the mirror: dockerd no " \
           "longer lists the mirror)" in line


def test_what_dockerd_may_have_dropped_is_said(build):
    line = report(build, FakeProbe(["busybox:latest"], complete=False, daemon_running=False))
    assert "all through the mirror (dockerd keeps its last 256 events only: earlier pulls of this build are not in " \
           "its record) (dockerd pid 42 has ended since the setup: its pulls before the restart are lost)" in line


def test_a_daemon_that_does_not_answer_is_one_part_of_the_line(build):
    line = report(build, FakeProbe([], unavailable="no answer on unix:///d.sock (refused)"))
    assert line == ("mirror: 1 manifests served by the mirror (docker.io 1); dockerd's own record of pulls not read: "
                    f"no answer on unix:///d.sock (refused); no request fell back to the upstream; {NOT_SEEN}")


def test_a_setup_that_failed_open_is_reported_as_not_set_up(build):
    line = ("mirror: not set up: no running Docker daemon found; this build pulls from the upstream registries as it "
            "would without the mirror")
    state_files(build)["not_set_up"].write_text(line + "\n")  # as the setup writes it (cli.not_set_up)
    assert report(build, FakeProbe(["busybox:latest"])) == line


def test_a_host_the_setup_never_ran_on_gets_one_plain_line(tmp_path):
    pidfile = tmp_path / "mirror-endpoint.pid"
    assert report(pidfile, FakeProbe([])) == (
        f"mirror: no record of this build's pulls: the setup has not run here (no {tmp_path}/mirror-endpoint.requests)")


def test_a_journal_that_is_not_one_is_named_in_one_line(build):
    state_files(build)["journal"].write_text("not json\n")
    line = report(build, FakeProbe([]))
    assert line.startswith(f"mirror: no record of this build's pulls: {state_files(build)['journal']} is not the "
                           "endpoint's journal (") and "\n" not in line
