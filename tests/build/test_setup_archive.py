"""The one file builds fetch: the setup package as a zip archive Python runs as a script (setup_archive.py),
the same bytes on every synth, runnable under the name setup lines written before it save it as."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

from ecr_mirror_cdk.setup.endpoint import state_files
from ecr_mirror_cdk.setup.report import NOT_SEEN
from ecr_mirror_cdk.setup_archive import FIXED_TIME, setup_archive, write_setup_archive

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "ecr_mirror_cdk" / "setup"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("MIRROR_", "PYTHON"))}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=60)


def test_the_archive_is_the_same_bytes_in_another_process_with_fixed_dates_and_order():
    # Given the archive built here, and one built by another interpreter process (another synth)
    here = setup_archive()
    other = subprocess.run([sys.executable, "-c", "import sys; from ecr_mirror_cdk.setup_archive import "
                            "setup_archive; sys.stdout.buffer.write(setup_archive())"],
                           cwd=REPO, capture_output=True, check=True, timeout=60).stdout

    # Then the bytes are the same, no entry carries a file's own date, and the entries come in a fixed order
    assert here == other
    entries = zipfile.ZipFile(BytesIO(here)).infolist()
    assert {entry.date_time for entry in entries} == {FIXED_TIME}
    assert [entry.filename for entry in entries] == [
        "__main__.py", "ecr_mirror_cdk/__init__.py",
        *sorted(f"ecr_mirror_cdk/setup/{path.name}" for path in PACKAGE.glob("*.py"))]


def test_the_archive_saved_as_setup_mirror_py_runs_help_and_report_outside_a_checkout(tmp_path):
    # Given the archive where an earlier setup line saves what it fetched, and a build's journal of one pull
    script = write_setup_archive(tmp_path / "tmp" / "setup_mirror.py")
    pidfile = tmp_path / "mirror-endpoint.pid"
    state_files(pidfile)["journal"].write_text(json.dumps(
        {"served": True, "method": "GET", "upstream": "docker.io", "image": "library/busybox",
         "reference": "latest", "repository": "docker-hub/library/busybox"}) + "\n")

    # When python3 runs it as that line does, from a folder with no ecr_mirror_cdk in it
    helped = run(str(script), "--help", cwd=tmp_path)
    reported = run(str(script), "--report", "--endpoint-pidfile", str(pidfile), cwd=tmp_path)

    # Then it is the setup's command line, and its report reads the journal
    assert helped.returncode == 0 and helped.stdout.startswith("usage: setup_mirror.py [-h] [--registry REGISTRY]")
    assert "Make every pull of a build come from the ECR mirror" in helped.stdout
    assert reported.returncode == 0 and reported.stdout.startswith(
        "mirror: 1 manifests served by the mirror (docker.io 1); dockerd's own record of pulls not read (")
    assert reported.stdout.endswith(f"; no request fell back to the upstream; {NOT_SEEN}\n")


def test_the_package_runs_by_hand_from_a_checkout(tmp_path):
    result = run("-m", "ecr_mirror_cdk.setup", "--report", "--endpoint-pidfile", str(tmp_path / "none.pid"), cwd=REPO)
    assert (result.returncode, result.stdout) == (
        0, f"mirror: no record of this build's pulls: the setup has not run here (no {tmp_path / 'none.requests'})\n")

    refused = run("-m", "ecr_mirror_cdk.setup", "--port", "1", cwd=REPO)
    assert (refused.returncode, refused.stderr) == (2, "setup_mirror: --registry (or $MIRROR_REGISTRY) is required\n")


def test_the_manuals_command_writes_the_archive_by_hand(tmp_path):
    assert "python3 -m ecr_mirror_cdk.setup_archive setup_mirror.pyz" in (REPO / "docs" / "build.md").read_text()
    result = run("-m", "ecr_mirror_cdk.setup_archive", str(tmp_path / "setup_mirror.pyz"), cwd=REPO)
    assert result.returncode == 0 and (tmp_path / "setup_mirror.pyz").read_bytes() == setup_archive()


def archive_command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python3 -m ecr_mirror_cdk.setup_archive ARGS` run in `cwd`, with this checkout on the module path."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("MIRROR_", "PYTHON"))}
    return subprocess.run([sys.executable, "-m", "ecr_mirror_cdk.setup_archive", *args], cwd=cwd,
                          env={**environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)


def test_help_prints_usage_and_writes_no_file(tmp_path):
    result = archive_command("--help", cwd=tmp_path)

    assert result.returncode == 0
    assert result.stdout.startswith("usage: python3 -m ecr_mirror_cdk.setup_archive [-h] [FILE]\n")
    assert list(tmp_path.iterdir()) == []


def test_bad_usage_is_one_line_and_writes_no_file(tmp_path):
    unknown = archive_command("--bogus", cwd=tmp_path)
    two = archive_command("a.pyz", "b.pyz", cwd=tmp_path)

    assert (unknown.returncode, unknown.stderr) == (2, "python3 -m ecr_mirror_cdk.setup_archive: error: unrecognized "
                                                       "arguments: --bogus (see python3 -m ecr_mirror_cdk.setup_archive"
                                                       " --help)\n")
    assert two.returncode == 2 and two.stderr.count("\n") == 1 and "unrecognized arguments: b.pyz" in two.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_cannot_be_written_is_one_line_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "taken").mkdir()

    result = archive_command("taken", cwd=tmp_path)

    assert (result.returncode, result.stderr) == (
        1, "python3 -m ecr_mirror_cdk.setup_archive: error: cannot write taken: Is a directory\n")
    assert [path.name for path in tmp_path.iterdir()] == ["taken"] and list((tmp_path / "taken").iterdir()) == []


def test_every_module_of_the_setup_is_python_3_9_and_stdlib_only():
    """Build hosts run the python3 their image has: Python 3.9 or later (Amazon Linux 2023's is 3.9)."""
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path), feature_version=(3, 9))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in sys.stdlib_module_names | {"__future__"}, (path, node.module)
            elif isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in sys.stdlib_module_names for a in node.names), path
