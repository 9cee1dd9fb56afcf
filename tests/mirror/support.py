"""Helpers for the mirror's end-to-end tests: config files and counts at loopback registries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ecr_mirror_cdk.config import Config
from ecr_mirror_cdk.config_parse import parse_config


def write_config(path: Path, *images: dict[str, Any], **top: Any) -> Path:
    path.write_text(yaml.safe_dump({"images": list(images), **top}))
    return path


def config(*images: dict[str, Any], **top: Any) -> Config:
    return parse_config({"images": list(images), **top})
