"""An upstream's secret that cannot be read fails that registry's images only: the rest are planned and
copied, by the CLI and by the planner Lambda's job, with one line of reason and no traceback. Source
clients follow their secret: kept while it holds the same login, replaced when it changes."""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from lambdas.mirror.aws.connect import connect
from lambdas.mirror.aws.ecr import PLACEHOLDER
from lambdas.mirror.cli.main import main
from lambdas.mirror.handlers.jobs import plan_and_enqueue
from lambdas.mirror.oci.errors import CredentialsError
from lambdas.mirror.planning.plan import plan
from lambdas.mirror.planning.task import Action
from tests.support.images import push_image
from tests.support.moto import moto_client
from tests.support.registry import RegistryServer, free_port

from .support import config, write_config

MISSING = "ecr-pullthroughcache/not-created"
Registries = tuple[RegistryServer, RegistryServer, RegistryServer]


class Queue:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, object]:  # noqa: N803
        self.bodies += [e["MessageBody"] for e in Entries]
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}


@pytest.fixture
def registries(registry_factory: Callable[..., RegistryServer]) -> Registries:
    hub, other, destination = registry_factory("hub"), registry_factory("other"), registry_factory("destination")
    push_image(hub.host, "library/python", "3.13", kind="docker-v2")
    push_image(other.host, "team/app", "v1", kind="docker-v2")
    return hub, other, destination


def test_a_missing_secret_fails_docker_hubs_images_and_plans_the_others(
        aws: str, registries: Registries) -> None:
    hub, other, destination = registries
    cfg = config({"source": "python", "tags": ["3.13"]}, {"source": f"{other.host}/team/app", "tags": ["v1"]})
    endpoints = connect(destination.host, upstreams={"docker.io": hub.host}, credentials={"docker.io": MISSING})

    planned = plan(cfg, endpoints)

    (python, app) = planned.items
    assert python.action is Action.FAILED
    assert python.reason.startswith(f"cannot read the secret {MISSING} for docker.io: ")
    assert "ResourceNotFoundException" in python.reason
    assert app.action is Action.COPY


def test_the_planner_job_queues_the_others_when_the_secret_is_missing(
        aws: str, registries: Registries) -> None:
    hub, other, destination = registries
    spec = config({"source": "python", "tags": ["3.13"]}, {"source": f"{other.host}/team/app", "tags": ["v1"]})
    queue = Queue()

    summary = plan_and_enqueue(spec.to_json(), connect(destination.host, upstreams={"docker.io": hub.host},
                                                       credentials={"docker.io": MISSING}), "https://queue", sqs=queue)

    assert (summary["failed"], summary["enqueued"]) == (1, 1)
    assert [json.loads(body)["source"] for body in queue.bodies] == [f"{other.host}/team/app"]


def test_an_unreachable_secrets_manager_is_one_line_per_image_and_the_cli_copies_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        registries: Registries) -> None:
    hub, other, destination = registries
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(key, value)
    cfg = write_config(tmp_path / "mirror.yaml", {"source": "python", "tags": ["3.13"]},
                       {"source": f"{other.host}/team/app", "tags": ["v1"]})
    out, err = io.StringIO(), io.StringIO()

    code = main(["sync", "--config", str(cfg), "--registry", destination.host, "--upstream", f"docker.io={hub.host}",
                 "--registry-credentials", "docker.io=ecr-pullthroughcache/docker-hub"], out=out, err=err)

    failed = [line for line in out.getvalue().splitlines() if line.startswith("failed ")]
    assert code == 1
    assert failed == [f"failed docker.io/library/python:3.13: cannot read the secret "
                      f"ecr-pullthroughcache/docker-hub for docker.io: {failed[0].split('docker.io: ', 1)[1]}"]
    assert "Could not connect to the endpoint URL" in failed[0]
    assert f"copied {other.host}/team/app:v1 " in out.getvalue()
    assert "Traceback" not in err.getvalue()


def test_a_secret_that_exists_is_used(aws: str, registries: Registries) -> None:
    hub, _, destination = registries
    moto_client("secretsmanager", aws).create_secret(
        Name="ecr-pullthroughcache/docker-hub", SecretString=json.dumps({"username": "u", "accessToken": "t"}))
    endpoints = connect(destination.host, upstreams={"docker.io": hub.host},
                        credentials={"docker.io": "ecr-pullthroughcache/docker-hub"})

    assert endpoints.source("docker.io").auth.credential == "user 'u' from secret ecr-pullthroughcache/docker-hub"


class Secrets:
    """A secrets provider in memory: `values` are what the secrets hold now; `reads` counts each read."""

    def __init__(self, **values: str) -> None:
        self.values = dict(values)
        self.reads = 0

    def get(self, name: str, max_age: int = 0) -> str:
        self.reads += 1
        if name not in self.values:
            raise LookupError(f"no secret {name}")
        return self.values[name]


def test_a_source_client_is_kept_while_its_secret_holds_the_same_login_and_replaced_when_it_changes() -> None:
    token = secrets.token_urlsafe(16)
    store = Secrets(ghcr=json.dumps({"username": "bot", "accessToken": token}))
    endpoints = connect("127.0.0.1:9", credentials={"ghcr.io": "ghcr"}, secrets=store)
    first = endpoints.source("ghcr.io")

    assert endpoints.source("ghcr.io") is first
    store.values["ghcr"] = json.dumps({"username": "bot", "accessToken": secrets.token_urlsafe(16)})
    second = endpoints.source("ghcr.io")

    assert second is not first and second.auth is not first.auth
    assert second.auth.credential == "user 'bot' from secret ghcr"
    assert store.reads == 3  # one read per use: the provider's max_age decides how often AWS is asked


def test_a_secret_holding_the_placeholder_means_anonymous_and_other_registries_need_no_secret() -> None:
    store = Secrets(ghcr=json.dumps(dict.fromkeys(("username", "accessToken"), PLACEHOLDER)))
    endpoints = connect("127.0.0.1:9", credentials={"ghcr.io": "ghcr"}, secrets=store)

    assert endpoints.source("ghcr.io").auth.credential == "anonymous access"
    assert endpoints.source("quay.io").auth.credential == "anonymous access"
    assert store.reads == 1


def test_a_secret_that_cannot_be_read_is_asked_again_only_after_max_age() -> None:
    store = Secrets()
    endpoints = connect("127.0.0.1:9", credentials={"ghcr.io": "ghcr"}, secrets=store, secret_max_age=300)

    for _ in range(3):
        with pytest.raises(CredentialsError, match=r"^cannot read the secret ghcr for ghcr\.io: no secret ghcr$"):
            endpoints.source("ghcr.io")

    assert store.reads == 1


def test_a_secret_that_is_not_json_fails_without_quoting_it() -> None:
    token = secrets.token_urlsafe(16)
    endpoints = connect("127.0.0.1:9", credentials={"ghcr.io": "ghcr"}, secrets=Secrets(ghcr=f"bot:{token}"))

    with pytest.raises(CredentialsError) as failed:
        endpoints.source("ghcr.io")

    assert str(failed.value) == "the secret ghcr for ghcr.io is not a JSON object with username and accessToken"
