"""The copy engine and the CLI stay free of Powertools, the X-Ray SDK and boto3: importing them costs
~0.3 s per process (measured with `python -X importtime`), and `make synth` alone must run the CLI."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("modules", ["lambdas.mirror.copy, lambdas.mirror.registry",
                                     "lambdas.mirror.cli, lambdas.mirror.plan, lambdas.mirror.sync"])
def test_the_engine_and_the_cli_import_neither_powertools_nor_boto3(modules: str) -> None:
    probe = (
        f"import sys, {modules}; "
        "print(sorted(m for m in ('aws_lambda_powertools', 'aws_xray_sdk', 'boto3') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
