"""The Lambda asset carries the urllib3 its code needs, and that copy wins over an older one the runtime puts
after it on sys.path (Lambda: the function's code, then layers, then the runtime's own packages)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from stacks import lambda_asset
from tests.mirror.support import write_config
from tests.support.images import push_image
from tests.support.registry import RegistryServer
from tests.support.token_issuer import TokenIssuer

ROOT = Path(__file__).resolve().parents[2]
OLD_RUNTIME_LOCK = ROOT / "tests/support/runtime-urllib3.lock"

# Runs inside the "runtime": no site-packages of this venv but a copy without urllib3 (boto3, Powertools).
SCRIPT = """
import json, sys
asset, layer, runtime, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
sys.path[:0] = [asset, layer, runtime]
import urllib3
import mirror.handlers.copier, mirror.handlers.planner  # the handlers import under these packages
from mirror.cli.main import main
print(json.dumps({"urllib3": urllib3.__version__, "file": urllib3.__file__}), file=sys.stderr)
sys.exit(main(argv))
"""


def locked(lock: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", lock.read_text(), re.MULTILINE))


@pytest.fixture(scope="module")
def layer_without_urllib3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This venv's packages (boto3, Powertools: what the runtime and the layer provide), urllib3 left out."""
    folder = tmp_path_factory.mktemp("layer")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith("urllib3"):
            (folder / entry.name).symlink_to(entry)
    return folder


def run_in_runtime(asset: Path, layer: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    runtime = lambda_asset.locked_packages(OLD_RUNTIME_LOCK)
    return subprocess.run([sys.executable, "-I", "-S", "-c", SCRIPT, str(asset), str(layer), str(runtime), *argv],
                          capture_output=True, text=True, timeout=120, check=False)


def sync_from_a_token_auth_source(tmp_path: Path, registry_factory: Callable[..., RegistryServer], code: Path,
                                  layer: Path) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    """Run the CLI's sync with `code` first on sys.path and urllib3 1.26 last, from a source that hands out
    bearer tokens (anonymous pulls need one too); the run and the token requests it made."""
    with TokenIssuer(tmp_path / "issuer", users={"alice": "wonderland"}) as issuer:
        source = registry_factory("secured", auth=issuer.registry_auth())
        push_image(source.host, "team/app", "v1", username="alice", password="wonderland")
        destination = registry_factory("destination")
        config = write_config(tmp_path / "mirror.yaml", {"source": f"{source.host}/team/app", "tags": ["v1"],
                                                         "target": "mirror/app"})
        done = run_in_runtime(code, layer, "sync", "--config", str(config), "--registry", destination.host, "--json")
        return done, list(issuer.requests)


def test_the_bundled_urllib3_wins_over_the_runtimes_and_token_logins_and_copies_succeed(
        tmp_path: Path, registry_factory: Callable[..., RegistryServer], layer_without_urllib3: Path) -> None:
    # Given the asset as synth builds it, a token-auth source (anonymous pulls need a bearer token) and urllib3
    # 1.26 behind the asset on sys.path
    asset = tmp_path / "asset"
    lambda_asset.build(asset)

    # When the real planner and copier run there
    done, issued = sync_from_a_token_auth_source(tmp_path, registry_factory, asset, layer_without_urllib3)

    # Then the asset's urllib3 was imported, the source's token login worked and the image was copied
    imported = json.loads(done.stderr.splitlines()[-1] if done.stderr else "{}")
    assert imported.get("urllib3") == locked(lambda_asset.LOCK)["urllib3"], done.stderr
    assert imported["file"].startswith(str(asset))
    assert done.returncode == 0, done.stderr
    assert [e["status"] for e in json.loads(done.stdout)["items"]] == ["copied"]
    assert issued, "the source never asked for a token"


def test_without_the_bundled_copy_the_runtimes_urllib3_breaks_the_token_login(
        tmp_path: Path, registry_factory: Callable[..., RegistryServer], layer_without_urllib3: Path) -> None:
    # Given the handlers' code alone (the asset as it was before it carried urllib3)
    code_only = tmp_path / "code"
    (code_only / "mirror").mkdir(parents=True)
    shutil.copytree(lambda_asset.LAMBDAS_DIR / "mirror", code_only / "mirror", dirs_exist_ok=True)
    (code_only / "ecr_mirror_cdk").mkdir()
    for name in lambda_asset.MODEL:
        shutil.copy2(lambda_asset.LIBRARY_DIR / name, code_only / "ecr_mirror_cdk" / name)

    # When the same sync runs on the runtime's urllib3 1.26
    done, _ = sync_from_a_token_auth_source(tmp_path, registry_factory, code_only, layer_without_urllib3)

    # Then it fails as the issue reported: urllib3 1.26's response has no .json()
    assert done.returncode != 0
    assert "'HTTPResponse' object has no attribute 'json'" in done.stdout + done.stderr


def test_the_handler_tests_run_on_the_versions_the_asset_carries() -> None:
    # The venv that runs tests/mirror pins what the asset bundles, so the handler tests run on the same code.
    for package, version in locked(lambda_asset.LOCK).items():
        assert metadata.version(package) == version, f"requirements-dev.txt must pin {package}=={version}"


def test_a_lock_pip_cannot_install_stops_synth_with_one_line(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("urllib3==2.8.0 --hash=sha256:" + "0" * 64 + "\n")

    with pytest.raises(lambda_asset.AssetError) as raised:
        lambda_asset.locked_packages(lock, tmp_path / "cache")

    assert "\n" not in str(raised.value)
    assert "pip could not install the Lambda packages" in str(raised.value)
    assert not list((tmp_path / "cache").iterdir())  # nothing half-installed is left to be reused


def elf_machine(path: Path) -> int:
    """e_machine of an ELF shared object (183: AArch64, 62: x86-64; the ELF specification's header layout)."""
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


def test_the_asset_carries_cryptography_built_for_the_functions_arm64_python_3_13(tmp_path: Path) -> None:
    # The runtime has no cryptography; the signature checks (`verify`) import the asset's. This machine is x86-64,
    # so what can be checked here is that pip chose the wheels the runtime loads: aarch64, CPython 3.13 or abi3.
    asset = tmp_path / "asset"
    lambda_asset.build(asset)

    rust = asset / "cryptography/hazmat/bindings/_rust.abi3.so"
    backend = next(asset.glob("_cffi_backend.*.so"))
    assert elf_machine(rust) == elf_machine(backend) == 183
    assert "cpython-313-aarch64-linux-gnu" in backend.name
    wheel = (asset / f"cryptography-{locked(lambda_asset.LOCK)['cryptography']}.dist-info" / "WHEEL").read_text()
    assert re.search(r"^Tag: cp3\d+-abi3-manylinux.*_aarch64$", wheel, re.MULTILINE), wheel
