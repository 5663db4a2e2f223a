"""The core (ops, clippers, optim, monitor, distributed) imports nothing from the application."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gradclip"
CORE = ("ops", "clippers", "optim", "monitor", "distributed")
APPLICATION = ("gradclip.lm", "gradclip.diagnostics", "gradclip.cli")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def core_files() -> list[Path]:
    files = []
    for name in CORE:
        if (PACKAGE / f"{name}.py").exists():
            files.append(PACKAGE / f"{name}.py")
        files.extend(sorted((PACKAGE / name).glob("**/*.py")))
    return files


def test_core_modules_exist():
    files = core_files()
    for package in ("ops", "clippers", "optim"):
        assert (PACKAGE / package / "__init__.py") in files, package
        assert not (PACKAGE / f"{package}.py").exists(), f"{package}.py beside {package}/"


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.name)
def test_core_does_not_import_the_application(path):
    bad = {
        m
        for m in imported_modules(path)
        if any(m == app or m.startswith(app + ".") for app in APPLICATION)
    }
    assert not bad, f"{path.name} imports application modules {sorted(bad)}"


def test_package_ships_py_typed():
    assert (PACKAGE / "py.typed").exists()
