"""The import direction is a contract: runtime <- data_prep <- trainer <- inference <- transfer <- app.

import-linter checks it from ``[tool.importlinter]`` in pyproject.toml (layers, plus "runtime imports no
stage"). The contract holds for the repository, and the same check fails on a copy of the packages into
which one upward import was planted, so a wrong import fails the default test suite.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "data_prep", "trainer", "inference", "transfer", "app")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` over the packages under ``root`` (they shadow the editable install)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def copy_of_the_packages(tmp_path) -> Path:
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_repository_keeps_the_import_contract():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_unmodified_copy_keeps_the_contract(copy_of_the_packages):
    """The copy is a faithful stand-in: only the planted import below can break it."""
    result = _lint_imports(copy_of_the_packages)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module, wrong_import, verdict, chain", [
    # a lower stage reaching up, even inside a function (the codebase imports lazily a lot): layers broken
    ("data_prep/uses_the_trainer.py", "def f():\n    from trainer import config\n", "1 kept, 1 broken",
     "data_prep.uses_the_trainer -> trainer.config"),
    ("inference/uses_transfer.py", "import transfer.svm\n", "1 kept, 1 broken",
     "inference.uses_transfer -> transfer.svm"),
    # the shared runtime importing a stage: both contracts broken
    ("runtime/uses_a_stage.py", "from data_prep import records\n", "0 kept, 2 broken",
     "runtime.uses_a_stage -> data_prep.records"),
])
def test_an_upward_import_breaks_the_contract(copy_of_the_packages, module, wrong_import, verdict, chain):
    (copy_of_the_packages / module).write_text(wrong_import)
    result = _lint_imports(copy_of_the_packages)
    assert result.returncode != 0, result.stdout
    assert f"Contracts: {verdict}." in result.stdout, result.stdout
    assert chain in result.stdout  # names the offending module and what it imports
