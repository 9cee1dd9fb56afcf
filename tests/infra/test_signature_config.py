"""`verify` in mirror.yaml: a bad key is one line naming file, entry and field; the stack lets the planner read
the stored keys (and nothing else), and alarms on a held tag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ecr_mirror_cdk.config import ConfigError
from ecr_mirror_cdk.config_parse import load_config, parse_config

from .conftest import Synthesized, synthesize
from .test_observability import ALARMS, alarm_topic, assert_only_these_alarms


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


P256 = pem(ec.generate_private_key(ec.SECP256R1()))


def write(tmp_path: Path, verify: str) -> Path:
    path = tmp_path / "mirror.yaml"
    indented = "\n".join("        " + line for line in verify.splitlines())
    path.write_text(f"images:\n  - source: python\n    tags: ['3.13']\n    verify:\n      cosign_public_key: |\n"
                    f"{indented}\n")
    return path


@pytest.mark.parametrize(("key", "says"), [
    (pem(ec.generate_private_key(ec.SECP384R1())), "an ECDSA secp384r1 key: only P-256 (secp256r1) ECDSA keys"),
    (pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "a 1024-bit RSA key: RSA keys of 2048"),
    (pem(ed25519.Ed25519PrivateKey.generate()), "only ECDSA P-256 and RSA keys are accepted"),
    (P256.replace("M", "N", 1), "not a readable PEM public key"),
    (ec.generate_private_key(ec.SECP256R1()).private_bytes(  # a private key pasted by mistake, made here
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
     "this is a private key"),
    ("ssm:", "'' is not an SSM parameter name"),
    ("secretsmanager:a b", "'a b' is not a Secrets Manager secret name"),
    ("cosign.pub", "must be a PEM public key (-----BEGIN PUBLIC KEY----- ...), ssm:<parameter name> or "
                   "secretsmanager:<secret name>"),
])
def test_a_bad_key_is_one_line_naming_the_file_the_entry_and_the_field(tmp_path: Path, key: str, says: str) -> None:
    path = write(tmp_path, key)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: images[0] (python).verify.cosign_public_key: "), message
    assert says in message and "\n" not in message


def test_an_unknown_key_under_verify_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^mirror.yaml: verify: unknown key 'key' \(allowed: cosign_public_key\)$"):
        parse_config({"images": [{"source": "python", "tags": ["1"]}], "verify": {"key": P256}})


def test_verify_for_all_with_an_image_of_its_own_and_one_opted_out_survives_the_planners_json() -> None:
    config = parse_config({"verify": {"cosign_public_key": P256}, "images": [
        {"source": "python", "tags": ["1"]},
        {"source": "ruby", "tags": ["1"], "verify": False},
        {"source": "node", "tags": ["1"], "verify": {"cosign_public_key": "ssm:/ecr-mirror/node.pub"}},
    ]})

    assert [i.verify and i.verify.cosign_public_key for i in config.images] == [P256, None, "ssm:/ecr-mirror/node.pub"]
    assert parse_config(json.loads(config.to_json())) == config
    assert [(k.kind, k.value) for k in config.verify_keys()] == [("pem", P256), ("ssm", "/ecr-mirror/node.pub")]


@pytest.fixture(scope="module")
def verifying_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(parse_config({"images": [
        {"source": "python", "tags": ["3.13"], "verify": {"cosign_public_key": P256}},
        {"source": "ghcr.io/org/app", "tags": ["1"], "verify": {"cosign_public_key": "ssm:/ecr-mirror/cosign.pub"}},
        {"source": "quay.io/org/tool", "tags": ["1"], "verify": {"cosign_public_key": "secretsmanager:team/cosign"}},
    ]}, origin="verify.yaml"), tmp_path_factory.mktemp("cdk.out"))


def test_a_held_tag_raises_an_alarm_on_the_unverified_count(verifying_app: Synthesized) -> None:
    verifying_app.template.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": "EcrMirror-UnverifiedImages", "Namespace": "EcrMirror", "MetricName": "ImagesUnverified",
        "Dimensions": [{"Name": "service", "Value": "ecr-mirror"}], "Statistic": "Maximum",
        "ComparisonOperator": "GreaterThanThreshold", "Threshold": 0, "Period": 900,
        # The planner emits the count once a run: a period without a run keeps the state, a run counting 0 clears it
        "TreatMissingData": "ignore",
        "AlarmActions": [alarm_topic(verifying_app)], "OKActions": [alarm_topic(verifying_app)],
    })
    policy = verifying_app.template.find_resources("AWS::SNS::TopicPolicy")
    (statement,) = [s for p in policy.values() for s in p["Properties"]["PolicyDocument"]["Statement"]
                    if s.get("Sid") == "AllowMirrorAlarmsToPublish"]
    assert_only_these_alarms(verifying_app, statement["Condition"], (*ALARMS, "UnverifiedImages"))


def test_without_verify_there_is_no_unverified_alarm(default_app: Synthesized) -> None:
    assert not default_app.template.find_resources("AWS::CloudWatch::Alarm", {
        "Properties": {"MetricName": "ImagesUnverified"}})


def test_only_the_planner_may_read_the_stored_keys(verifying_app: Synthesized) -> None:
    planner = verifying_app.by_path("Sync/PlannerRole/DefaultPolicy")
    statements = verifying_app.data["Resources"][planner]["Properties"]["PolicyDocument"]["Statement"]
    text = json.dumps(statements)
    assert ":parameter/ecr-mirror/cosign.pub" in text and ":secret:team/cosign-??????" in text
    granted = {}  # stored key -> the actions of the statement that names it
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for needle in (":parameter/ecr-mirror/cosign.pub", ":secret:team/cosign-??????"):
            if needle in json.dumps(statement["Resource"]):
                granted[needle] = sorted(actions)
    assert granted[":parameter/ecr-mirror/cosign.pub"] == ["ssm:GetParameter"]
    assert "secretsmanager:GetSecretValue" in granted[":secret:team/cosign-??????"]
    copier = verifying_app.by_path("Sync/CopierRole/DefaultPolicy")
    copier_text = json.dumps(verifying_app.data["Resources"][copier]["Properties"]["PolicyDocument"])
    assert "cosign" not in copier_text
