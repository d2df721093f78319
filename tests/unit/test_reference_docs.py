"""The generated reference pages (docs/reference/) are what the code gives now: a command,
option, exit code, failure class, config key or HTTP route changed without running
``python docs/reference/generate.py`` fails here, naming the page."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from conftest import ROOT

REFERENCE = ROOT / "docs" / "reference"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_reference", REFERENCE / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_reference_pages_are_what_the_generator_gives() -> None:
    stale = [
        name
        for name, text in _generator().generate().items()
        if not (REFERENCE / name).exists() or (REFERENCE / name).read_text() != text
    ]
    assert not stale, f"stale: {stale}: run python docs/reference/generate.py and commit"


def test_every_command_and_failure_class_is_in_the_reference() -> None:
    import click

    from oomguard.cli import main as cli_main
    from oomguard.jobs.model import FailureClass

    cli_main._register()
    cli_page = (REFERENCE / "cli.md").read_text()
    for name, command in cli_main.cli.commands.items():
        if not command.hidden:
            assert f"## `oomguard {name}`" in cli_page, name
            for param in command.params:
                if isinstance(param, click.Option) and not param.hidden:
                    assert f"`{param.opts[0]}`" in cli_page, (name, param.opts[0])
    classes = (REFERENCE / "failure-classes.md").read_text()
    for cls in FailureClass:
        assert f"| `{cls.value}` |" in classes, cls


def test_guide_and_reference_links_point_at_files_that_exist() -> None:
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken
