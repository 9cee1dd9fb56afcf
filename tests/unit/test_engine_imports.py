"""The copy engine stays free of Powertools: importing it (the X-Ray SDK) costs ~0.3 s per process."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_copy_engine_imports_neither_powertools_nor_boto3():
    probe = (
        "import sys, lambdas.mirror.copy, lambdas.mirror.registry; "
        "print(sorted(m for m in ('aws_lambda_powertools', 'aws_xray_sdk', 'boto3') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
