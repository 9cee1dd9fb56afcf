"""ecr-mirror-cdk: the ECR mirror's constructs for any CDK app, and the config model they read.

    from ecr_mirror_cdk import MirrorAdoption, MirrorBuildProject, load_config

Names are loaded when first used (PEP 562), so the Lambdas, which carry only the config model, and the build
host's setup (ecr_mirror_cdk/setup) import nothing of the CDK.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "MirrorAdoption": "adopt", "AdoptionError": "adopt",
    "MirrorBuildProject": "build",
    "Config": "config", "ConfigError": "config",
    "load_config": "config_parse", "parse_config": "config_parse",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
