"""What every stage of grading shares: the course's folders, nbgrader's command, the released notebooks."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

#: the instructor's output folder: ``reports/<assignment>/`` holds status.csv, logs and report.md
REPORTS_DIR = "reports"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def nbgrader_bin() -> str:
    """The nbgrader next to this Python (the course's venv), else the one on PATH."""
    local = Path(sys.executable).parent / "nbgrader"
    return str(local) if local.exists() else "nbgrader"


def tool_env() -> dict:
    """The environment of nbgrader's commands: the venv's tools first on PATH (alembic, jupyter)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def release_notebooks(course: Path, assignment: str) -> dict[str, dict]:
    """The released notebooks of an assignment: ``{name: notebook json}``."""
    folder = Path(course) / "exercises" / assignment
    notebooks = {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.ipynb"))}
    if not notebooks:
        raise FileNotFoundError(f"no released notebook in {folder}: run `make release` first")
    return notebooks


def grade_id(cell: dict) -> str | None:
    """nbgrader's id of a cell, or None for an ordinary cell (or a malformed one)."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    nbgrader = meta.get("nbgrader") if isinstance(meta, dict) else None
    return nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None


def reports_dir(course: Path, assignment: str) -> Path:
    return Path(course) / REPORTS_DIR / assignment
