"""Shared fixtures: paths of the course, and the solution notebook's code as a student's."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # nbgrader and jupyter-book run from the same environment


def tool_env(**extra) -> dict:
    """Environment for course commands run as subprocesses: the venv's tools first on PATH
    (nbgrader calls `alembic` by name), no progress bars, a private data cache."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def notebook_cells(path: Path) -> dict[str, str]:
    """The source of each cell of a notebook, keyed by its nbgrader grade_id (or cell id)."""
    nb = json.loads(path.read_text())
    cells = {}
    for cell in nb["cells"]:
        key = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or cell.get("id")
        cells[key] = "".join(cell["source"])
    return cells


def student_classes(*cell_sources: str) -> dict:
    """Execute solution cells as a student's notebook would, and return their namespace."""
    namespace = {"torch": torch}
    for source in cell_sources:
        exec(compile(source, "<solution cell>", "exec"), namespace)
    return namespace


def with_mistake(cells: dict[str, str], cell: str, *edits: tuple[str, str], setup: tuple[str, ...] = ()) -> dict:
    """Execute the ``setup`` cells, then one solution cell with text replaced (a mistake put
    in), and return the namespace; fails loudly when the solution no longer contains the
    text to replace."""
    source = cells[cell]
    for old, new in edits:
        assert old in source, f"the solution cell {cell!r} no longer contains {old!r}: update this test"
        source = source.replace(old, new)
    return student_classes(*(cells[name] for name in setup), source)


def solution_cells(assignment: str) -> dict[str, str]:
    return notebook_cells(ROOT / "solutions" / assignment / f"{assignment}.ipynb")


@pytest.fixture(scope="session")
def scaling_solution() -> dict[str, str]:
    return solution_cells("scaling")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Generated data (MNIST-1D) goes to a per-run cache, not the user's."""
    os.environ.setdefault("COURSEKIT_CACHE", str(tmp_path_factory.mktemp("coursekit-cache")))
    os.environ.setdefault("COURSEKIT_PROGRESS", "0")
