"""AWS API models as botocore ships them: what a test checks a limit or an enum against."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import botocore


def shapes(service: str) -> dict[str, Any]:
    """The shapes of `service`'s newest API model (data/<service>/<version>/service-2.json, gzipped or not)."""
    path = sorted(Path(botocore.__file__).parent.glob(f"data/{service}/*/service-2.json*"))[-1]
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return json.loads(raw)["shapes"]
