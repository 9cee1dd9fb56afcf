"""Reading `mirror.yaml` (at synth, and by the CLI) or the spec the stack stored in SSM (the planner Lambda) into a
validated `Config`. One parser for both, so synth and the Lambda accept and refuse the same files."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

from .config import DEFAULT_REFERRERS, DEFAULT_SCHEDULE, SPEC_PREFIX, Config, ConfigError
from .config_deployment import DeploymentSections
from .config_images import ImageSections


def parse_spec(text: str, *, origin: str = "mirror spec") -> Config:
    """The config `Config.to_spec` stored (plain JSON, as earlier versions stored it, is read too)."""
    if text.startswith(SPEC_PREFIX):
        try:
            text = gzip.decompress(base64.b64decode(text[len(SPEC_PREFIX):], validate=True)).decode()
        except (ValueError, OSError, EOFError) as err:
            raise ConfigError(f"{origin}: not a gzip+base64 spec: {err}") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"{origin}: not JSON: {err}") from None
    return parse_config(data, origin=origin)


def load_config(path: str | Path) -> Config:
    from . import yaml_source  # only synth and the CLI read YAML; the planner reads JSON

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        data = yaml_source.load(raw)
    except yaml_source.SourceError as err:
        raise ConfigError(f"{path}: {err}") from None
    return parse_config(data, origin=str(path))


def parse_config(data: Any, *, origin: str = "mirror.yaml") -> Config:
    return _Parser(origin).config(data)


class _Parser(ImageSections, DeploymentSections):
    """The whole file: the top-level keys, each read by its section's method, then the checks across sections."""

    def config(self, data: Any) -> Config:
        if data is None:
            raise self.fail("images", "the file is empty; it needs at least an 'images:' list")
        top = self.mapping(
            data,
            "top level",
            {"images", "schedule", "pull_through_cache", "docker_hub_credentials", "sync", "repositories",
             "sharing", "replication", "registry_credentials", "referrers", "verify"},
        )
        repositories = self.repositories(top.get("repositories", {}))
        credentials = self.credentials(top.get("docker_hub_credentials", {}))
        registry_credentials = self.registry_credentials(top.get("registry_credentials"))
        rules = self.rules(top.get("pull_through_cache"), credentials, dict(registry_credentials))
        referrers = self.boolean(top.get("referrers", DEFAULT_REFERRERS), "referrers")
        verify = self.verify(top.get("verify"), "verify") if top.get("verify") is not None else None
        images = self.images(top.get("images"), rules, repositories, referrers, verify)
        used = {image.ref.registry for image in images} | {rule.registry for rule in rules if rule.credentials_secret}
        for host, _ in registry_credentials:
            if host not in used:  # most likely a typo: its images would be fetched anonymously
                raise self.fail(f"registry_credentials.{host}", f"no image and no cache rule uses {host!r}")
        return Config(
            images=images,
            schedule=self.schedule(top.get("schedule", DEFAULT_SCHEDULE)),
            pull_through_cache=rules,
            docker_hub_credentials=credentials,
            sync=self.sync(top.get("sync", {})),
            repositories=repositories,
            sharing=self.sharing(top.get("sharing")),
            replication_regions=self.replication(top.get("replication")),
            verify=verify,
            registry_credentials=registry_credentials,
            referrers=referrers,
            origin=self.origin,
        )
