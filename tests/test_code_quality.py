"""Ruff, mypy and the layering contract, as configured in pyproject.toml, report nothing."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_is_clean() -> None:
    lint = _run(str(BIN / "ruff"), "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run(str(BIN / "ruff"), "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_is_clean() -> None:
    result = _run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def _contract_layers() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    return [name.strip() for layer in contract["layers"] for name in re.split(r"[|:]", layer)]


def test_imports_run_one_way() -> None:
    """The layering contract in pyproject.toml holds: no import runs back up a layer."""
    result = _run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_package_has_a_layer() -> None:
    """A new package or top-level module must be placed in the contract, not slip past it."""
    placed = set(_contract_layers())
    package = REPO / "kerani"
    modules = {
        f"kerani.{p.name}" if p.is_dir() else f"kerani.{p.stem}"
        for p in package.iterdir()
        if (p / "__init__.py").is_file() or (p.suffix == ".py" and p.stem[0] != "_")
    }
    assert modules - placed == set(), "packages missing from the layers contract"
    assert placed - modules == set(), "the layers contract names packages that do not exist"


def test_nothing_imports_the_folders_by_their_bare_names() -> None:
    """Code imports `kerani.ocr`, never `ocr`: a bare name would load a second copy."""
    bare = {p.name for p in (REPO / "kerani").iterdir() if p.is_symlink()}
    offenders = []
    for path in [*REPO.glob("*/**/*.py")]:
        if ".venv" in path.parts or "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in bare]
    assert offenders == []
