"""A CDK App as `cdk synth` builds it: cdk.json's context (feature flags included), no asset bundling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import App

CDK_JSON = Path(__file__).resolve().parents[2] / "cdk.json"


def cdk_app(outdir: Path | None = None, **context: Any) -> App:
    """Tests synthesize what `make synth` would; extra context (e.g. path metadata) goes on top."""
    settings = {**json.loads(CDK_JSON.read_text())["context"], "aws:cdk:bundling-stacks": [], **context}
    # Bundling is off because the Lambda code is a plain directory asset and these machines have no Docker.
    return App(outdir=None if outdir is None else str(outdir), context=settings)
