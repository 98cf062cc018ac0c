"""The layer rules of pyproject's ``[tool.importlinter]`` hold, and break when a library module imports a program.

grimp, which builds import-linter's graph, reads a package from the file system. Here the
folders that ``package-dir`` maps into ``mico_chat`` (``eval/``, ``serve/``, ...) sit beside
``mico_chat/``, so the check runs on a copy of the installed layout (Python files only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs lint-imports in a subprocess

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

pytest.importorskip("importlinter")

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"


def _python_files_only(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or not (n.endswith(".py") or os.path.isdir(os.path.join(folder, n)))]


def stage_installed_layout(root: Path) -> Path:
    """Copy the Python files of every package as installed (``package-dir`` applied) under ``root``."""
    package_dir = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    # Parents before children, so a mapped folder lands inside its (already copied) parent.
    for package, folder in sorted(package_dir.items(), key=lambda kv: kv[0].count(".")):
        shutil.copytree(REPO / folder, root / package.replace(".", "/"), ignore=_python_files_only)
    return root


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the repository's contracts, on the staged tree at ``root``."""
    command = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    # Only the staged copy on the path, never the repository; wide lines keep contract names whole.
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", command, "--config", str(PYPROJECT), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def staged(tmp_path) -> Path:
    return stage_installed_layout(tmp_path / "site")


def test_contracts_hold(staged):
    done = lint_imports(staged)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
    # Every mapped package was analysed (a missing one would make its contracts vacuous).
    assert all((staged / "mico_chat" / name / "__init__.py").is_file() for name in ("eval", "serve", "encoders"))


@pytest.mark.parametrize(
    ("module", "source", "contract", "named"),
    [
        ("training/data.py", "from mico_chat.eval import registry", "never imports a program", "mico_chat.training.data"),
        ("connectors/__init__.py", "import mico_chat.commands.demo", "never imports a program", "mico_chat.connectors"),
        ("eval/items.py", "from mico_chat.commands import demo", "above serve and eval", "mico_chat.eval.items"),
        ("serve/__init__.py", "from mico_chat.eval import runner", "above serve and eval", "mico_chat.serve"),
        ("eval/items.py", "from mico_chat.eval import cli", "no import cycle", ".items -> .cli"),
    ],
)
def test_a_broken_rule_fails(staged, module, source, contract, named):
    path = staged / "mico_chat" / module
    with path.open("a", encoding="utf-8") as f:
        f.write(f"\n\ndef _leak():\n    {source}\n")  # an import inside a function counts too
    done = lint_imports(staged)
    assert done.returncode != 0
    broken = done.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken and named in broken, done.stdout
