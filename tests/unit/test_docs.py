"""Docs that cannot drift. Every command the README and the manual (docs/*.md) show in a shell block, and every
`make …` or path in inline code, names only what exists (tests/support/doc_check.py); the check reports a bad
block; the README stays short; and `make docs` builds the manual strictly (a broken link or anchor fails it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.support.doc_check import ROOT, clean_path, commands, documents, problems, setup_arguments, shell_blocks

MAKE = shutil.which("make") or "make"


# --- the docs as they are --------------------------------------------------------------------------------


def test_every_command_and_path_the_readme_and_the_manual_show_exists() -> None:
    found = [p for doc in documents() for p in problems(doc.read_text(), doc.relative_to(ROOT).as_posix())]

    assert found == []


def test_the_check_reads_the_commands_it_is_meant_to_check() -> None:
    # Given every shell command of the README and the manual
    every = [tokens for doc in documents() for _, language, body in shell_blocks(doc.read_text())
             for _, tokens in commands(body, language)]

    # Then they include make targets with ARGS, the engine's CLI, the setup and repository paths (else the test
    # above would pass by reading nothing)
    assert {"synth", "test", "bootstrap", "deploy", "docker-hub-token", "verify"} <= {
        t[1] for t in every if t[0] == "make" and len(t) > 1}
    assert any(t[0] == "make" and any(w.startswith("ARGS=--") for w in t) for t in every)
    assert any(t[1:3] == ["-m", "lambdas.mirror"] for t in every if len(t) > 2)
    assert any(setup_arguments(t) for t in every)
    assert any(clean_path(w) for t in every for w in t)


def test_the_readme_shows_the_two_commands_and_deploy_in_five() -> None:
    readme = (ROOT / "README.md").read_text()
    made = [tokens[1] for _, language, body in shell_blocks(readme) for _, tokens in commands(body, language)
            if tokens[0] == "make"]

    assert made == ["synth", "test", "synth", "bootstrap", "deploy", "docker-hub-token", "verify"]


def test_the_readme_is_read_in_five_minutes() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 170


# --- the check can fail ----------------------------------------------------------------------------------


def test_a_make_target_that_does_not_exist_is_reported() -> None:
    text = "Run:\n\n```bash\nmake synth\nmake deplyo CONFIG=x.yaml   # typo\n```\n"

    assert problems(text, "x.md") == ["x.md:5: make target 'deplyo' does not exist in the Makefile"]


def test_a_flag_the_engine_cli_does_not_have_is_reported_in_a_block_and_in_make_args() -> None:
    text = ("```sh\n.venv/bin/python -m lambdas.mirror sync --config mirror.yaml --cache\n"
            "make plan ARGS=\"--registry 127.0.0.1:5000 --dry-run\" | jq .\n"
            "python -m lambdas.mirror copy\n```\n")

    assert problems(text, "x.md") == [
        "x.md:2: python -m lambdas.mirror sync: --cache is not one of its flags",
        "x.md:3: make plan ARGS: --dry-run is not a flag of what make plan runs",
        "x.md:4: python -m lambdas.mirror has no command 'copy' (plan, sync)"]


def test_a_flag_the_setup_does_not_have_is_reported() -> None:
    text = ("```console\n$ python3 -m ecr_mirror_cdk.setup \\\n    --registry 1.dkr.ecr.eu-west-1.amazonaws.com"
            " --mirror x\nsetup output --not-a-command\n```\n")

    assert problems(text, "x.md") == ["x.md:2: the build-host setup has no flag --mirror"]


def test_a_path_that_does_not_exist_is_reported_in_a_block_and_in_inline_code() -> None:
    text = ("The setup is `ecr_mirror_cdk/setup.py`; see `mirror/<host>/<path>` and `docs/`.\n\n"
            "```bash\npython3 stacks/missing.py --x && cat mirror.yaml\n```\n")

    assert problems(text, "x.md") == ["x.md:4: stacks/missing.py does not exist in the repository",
                                      "x.md:1: ecr_mirror_cdk/setup.py does not exist in the repository"]


def test_a_command_in_inline_code_is_checked_and_a_quote_may_span_lines() -> None:
    text = ("Run `make verify ARGS=--bulid`.\n\n```bash\njq '.a\n  | .b' x.json | make nope\n```\n")

    assert problems(text, "x.md") == ["x.md:4: make target 'nope' does not exist in the Makefile",
                                      "x.md:1: make verify ARGS: --bulid is not a flag of what make verify runs"]


# --- the manual builds, strictly -------------------------------------------------------------------------


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(value for name, value in attrs if name == "id" and value)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make docs` into a folder of its own, as `make test` runs it (without setting up the venv again)."""
    out = tmp_path_factory.mktemp("site")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    done = subprocess.run([MAKE, "-s", "-o", ".venv/bin/.dev", "docs", f"SITE={out}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_make_docs_builds_the_manual_in_strict_mode(site: Path) -> None:
    pages = {p.relative_to(site).as_posix() for p in site.rglob("index.html")}

    assert {"index.html", "configure/index.html", "deploy/index.html", "build/index.html", "adopt/index.html",
            "organization/index.html", "engine/index.html", "operate/index.html", "proof/index.html",
            "why/index.html", "simulation/index.html"} <= pages
    assert 'class="mermaid"' in (site / "index.html").read_text()


def test_every_link_of_the_readme_into_the_manual_reaches_a_page_and_anchor(site: Path) -> None:
    links = re.findall(r"\]\((docs/[^)#\s]*)(?:#([^)\s]+))?\)", (ROOT / "README.md").read_text())
    broken = []
    for target, anchor in links:
        page = ROOT / target
        html = site / (page.relative_to(ROOT / "docs").with_suffix("") / "index.html"
                       if page.stem != "index" else "index.html")
        if not page.exists() or not html.exists():
            broken.append(target)
        elif anchor:
            ids = _Ids()
            ids.feed(html.read_text())
            if anchor not in ids.ids:
                broken.append(f"{target}#{anchor}")

    assert links and broken == []


def test_a_broken_anchor_fails_the_strict_build(tmp_path: Path) -> None:
    # Given the manual with one link to an anchor no page has
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with (tmp_path / "docs" / "index.md").open("a") as index:
        index.write("\nSee [the deploy steps](deploy.md#no-such-section).\n")

    # When it is built as make docs builds it
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=tmp_path, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True,
                          text=True, timeout=300, check=False)

    # Then the build fails and names the link
    assert done.returncode != 0
    assert "does not contain an anchor '#no-such-section'" in done.stderr


def allowed_keys(data: dict[str, object]) -> set[str]:
    """The keys the config parser accepts where `data` carries an unknown key, read from its one-line refusal."""
    from ecr_mirror_cdk.config import ConfigError
    from ecr_mirror_cdk.config_parse import parse_config

    with pytest.raises(ConfigError) as refused:
        parse_config(data)
    allowed = re.search(r"\(allowed: (.*)\)$", str(refused.value))
    assert allowed is not None, str(refused.value)
    return set(allowed.group(1).split(", "))


def test_the_every_key_table_names_every_top_level_and_per_image_key_the_config_accepts() -> None:
    # Given the keys the parser accepts at the top of mirror.yaml and in an images entry
    top = allowed_keys({"images": [{"source": "python", "tags": ["3"]}], "no_such_key": 1})
    image = allowed_keys({"images": [{"source": "python", "tags": ["3"], "no_such_key": 1}]})

    # When the table of docs/configure.md is read (a row's first column may name several keys)
    page = (ROOT / "docs" / "configure.md").read_text()
    table = page.split("## Every key")[1].split("\n## ")[0]
    named = {key for row in table.splitlines() if row.startswith("| `")
             for key in re.findall(r"`([^`]+)`", row.split("|")[1])}

    # Then every one of them has a row
    assert {key.split(".")[0] for key in named} >= top
    assert {key.removeprefix("images[].") for key in named if key.startswith("images[].")} == image
