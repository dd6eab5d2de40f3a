"""Architecture checks (fast, no Ray): the import contracts in pyproject.toml ([tool.importlinter]), ruff's lint
(complexity included) and format, and no copy-pasted blocks between the family files."""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("tune.py", "sweep", "analysis", "trainables", "search_spaces", "benchmarks")
WINDOW = 6  # this many consecutive normalised lines in two family files count as a copy


def lint_imports_command() -> list[str]:
    """The `lint-imports` console script of this interpreter's environment, else the PATH's, else its click
    command run through this interpreter."""
    beside = Path(sys.executable).with_name("lint-imports")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("lint-imports")
    if found:
        return [found]
    return [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]


@pytest.mark.integration  # lint-imports
def test_import_contracts_hold():
    proc = subprocess.run(lint_imports_command(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"lint-imports failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


def python_files() -> list[Path]:
    files = []
    for name in SOURCES:
        path = ROOT / name
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def ruff(*args: str) -> subprocess.CompletedProcess:
    """ruff (its configuration in pyproject.toml) over the whole repository."""
    found = Path(sys.executable).with_name("ruff")
    exe = str(found) if found.exists() else shutil.which("ruff") or "ruff"
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.integration  # ruff
def test_ruff_lint_passes():
    """pyflakes, pycodestyle, import order, bugbear and the complexity rules (C901, PLR0912, PLR0915): a function
    too tangled to read fails here, whatever its line count."""
    proc = ruff("check", "--output-format", "concise", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.integration  # ruff
def test_ruff_format_holds():
    proc = ruff("format", "--check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def family_files() -> dict[str, Path]:
    """Every module of search_spaces that defines a module-level FAMILY, by module name."""
    import search_spaces

    files = {}
    for info in pkgutil.iter_modules(search_spaces.__path__):
        module = importlib.import_module(f"search_spaces.{info.name}")
        if hasattr(module, "FAMILY"):
            files[module.__name__] = Path(module.__file__)
    return files


def normalised_lines(path: Path) -> list[str]:
    stripped = (line.strip() for line in path.read_text().splitlines())
    return [line for line in stripped if line and not line.startswith("#")]


@pytest.mark.unit
def test_family_files_cover_the_registry():
    import search_spaces

    defined = {id(importlib.import_module(name).FAMILY) for name in family_files()}
    missing = [name for name, family in search_spaces.FAMILIES.items() if id(family) not in defined]
    assert not missing, f"registered families that are no module-level FAMILY of a search_spaces file: {missing}"


@pytest.mark.unit
def test_no_block_repeated_across_family_files():
    files = family_files()
    assert len(files) >= 2, f"expected several family files, found {sorted(files)}"
    seen: dict[str, set[str]] = defaultdict(set)
    first_text: dict[str, str] = {}
    for name, path in files.items():
        lines = normalised_lines(path)
        for start in range(len(lines) - WINDOW + 1):
            text = "\n".join(lines[start : start + WINDOW])
            digest = hashlib.sha1(text.encode()).hexdigest()
            seen[digest].add(name)
            first_text.setdefault(digest, text)
    repeats = [(sorted(names), first_text[digest]) for digest, names in seen.items() if len(names) > 1]
    assert not repeats, f"{len(repeats)} block(s) of {WINDOW} lines repeated across family files:\n" + "\n\n".join(
        f"in {', '.join(names)}:\n{text}" for names, text in repeats
    )
