"""Packaging facts stated in two places agree: tested Pythons, lint commands, the version."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import reliablelink

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _noxfile_constant(name: str) -> Any:
    """A literal module-level constant of noxfile.py, read without importing nox."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
                return ast.literal_eval(node.value)
    raise AssertionError(f"noxfile.py defines no {name}")


def test_the_classifiers_list_exactly_the_pythons_nox_tests() -> None:
    pythons = _noxfile_constant("PYTHONS")
    project = _pyproject()["project"]
    prefix = "Programming Language :: Python :: "
    listed = [c.removeprefix(prefix) for c in project["classifiers"] if re.fullmatch(rf"{prefix}3\.\d+", c)]
    assert listed == pythons
    assert project["requires-python"] == f">={pythons[0]}"


def test_pre_commit_runs_the_same_commands_as_nox_lint() -> None:
    entries = re.findall(r"^\s+entry:\s*(.+?)\s*$", (ROOT / ".pre-commit-config.yaml").read_text(), re.M)
    assert [shlex.split(e) for e in entries] == _noxfile_constant("LINT_COMMANDS")


def test_the_version_is_defined_once() -> None:
    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert _pyproject()["tool"]["hatch"]["version"]["path"] == "reliablelink/__init__.py"
    # What `reliablelink --version` prints. (A stale editable install can differ: reinstall.)
    assert importlib.metadata.version("reliablelink") == reliablelink.__version__
