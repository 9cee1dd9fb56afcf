"""The engine's imports run one way, and the copy engine and the CLI stay free of Powertools, the X-Ray SDK and boto3.

Layers of `lambdas/mirror/`, lowest first: `settings` (names only), `oci` (the distribution client and copy),
`planning` (the policy), `aws` (the adapters), then `handlers` and `cli`, which never import each other. A module
imports its own package or a lower layer, never a higher one; every import counts, lazy and TYPE_CHECKING ones too.
Importing Powertools, the X-Ray SDK or boto3 costs ~0.3 s per process (measured with `python -X importtime`), and
`make synth` alone must run the CLI."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "lambdas" / "mirror"
PACKAGE = "lambdas.mirror"
LAYERS = {"settings": 0, "oci": 1, "planning": 2, "aws": 3, "handlers": 4, "cli": 4, "__main__": 5}


def module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module of `lambdas.mirror` that `source` (the text of `module`) imports, anywhere in the file."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import ecr`
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 else ""


def upward_imports(module: str, imports: set[str]) -> list[str]:
    """The imports of `module` that reach a higher layer, or the sibling top layer (handlers <-> cli)."""
    own = layer(module)
    wrong = []
    for target in imports:
        other = layer(target)
        if not other or other == own:
            continue
        if other not in LAYERS:
            continue  # `from lambdas.mirror.oci import registry` names the module too; its package is checked
        if LAYERS[other] >= LAYERS[own]:
            wrong.append(target)
    return sorted(wrong)


def engine_modules() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(ENGINE.rglob("*.py")):
        module = module_name(path)
        graph[module] = imported_modules(path.read_text(), module, is_package=path.name == "__init__.py")
    return graph


def test_every_engine_module_lies_in_a_layer() -> None:
    loose = [m for m in engine_modules() if m != PACKAGE and layer(m) not in LAYERS]
    assert loose == [], "put each module of lambdas/mirror/ in oci, planning, aws, handlers or cli"


def test_no_engine_module_imports_a_higher_layer() -> None:
    wrong = {module: bad for module, imports in engine_modules().items() if (bad := upward_imports(module, imports))}
    assert wrong == {}


def test_no_two_engine_modules_import_each_other_in_a_cycle() -> None:
    modules = engine_modules()
    graph = {module: {t for t in targets if t in modules} - {module} for module, targets in modules.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError(f"import cycle: {' -> '.join([*path[path.index(module):], module])}")
        if module not in done:
            for target in sorted(graph[module]):
                visit(target, [*path, module])
            done.add(module)

    for module in graph:
        visit(module, [])


@pytest.mark.parametrize(("module", "source"), [
    ("lambdas.mirror.oci.copy", "from ..planning.task import Task\n"),
    ("lambdas.mirror.planning.plan", "def f():\n    from ..aws import ecr\n"),
    ("lambdas.mirror.planning.sync", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                     "    from lambdas.mirror.cli.report import sync\n"),
    ("lambdas.mirror.cli.main", "from ..handlers.jobs import run_message\n"),
])
def test_an_upward_import_is_caught_lazy_or_not(module: str, source: str) -> None:
    assert upward_imports(module, imported_modules(source, module)) != []


def test_a_downward_import_is_allowed() -> None:
    source = "from ..oci.registry import RegistryClient\nfrom .task import Task\nfrom ..settings import SERVICE_NAME\n"
    module = "lambdas.mirror.planning.plan"
    assert upward_imports(module, imported_modules(source, module)) == []


@pytest.mark.parametrize("modules", ["lambdas.mirror.oci.copy, lambdas.mirror.oci.registry",
                                     "lambdas.mirror.cli.main, lambdas.mirror.planning.plan, "
                                     "lambdas.mirror.planning.sync, lambdas.mirror.aws.connect"])
def test_the_engine_and_the_cli_import_neither_powertools_nor_boto3(modules: str) -> None:
    probe = (
        f"import sys, {modules}; "
        "print(sorted(m for m in ('aws_lambda_powertools', 'aws_xray_sdk', 'boto3') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
