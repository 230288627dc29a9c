"""What every stage of grading shares: the course's folders, nbgrader's command, the released notebooks."""
from __future__ import annotations

import json
import os
import sys
import unicodedata
from pathlib import Path

#: the instructor's output folder: ``reports/<assignment>/`` holds status.csv, logs and report.md
REPORTS_DIR = "reports"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
NBGRADER_DONE = "nbgrader-done"   # in a grading shard: nbgrader has exited
DEFAULT_TIMEOUT = 120.0     # seconds a test cell may run in the trusted checker, as nbgrader_config.py's Execute.timeout
MAX_ID_LENGTH = 100
ALLOWED_ID = (f"a student id must be usable as a folder name: not empty, '.' or '..', no '/', '\\', "
              f"NUL or control characters, not starting with '.', at most {MAX_ID_LENGTH} characters")


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


def graded_students(shard: Path, assignment: str, notebooks: list[str]) -> set[str]:
    """The students nbgrader has finished in a grading shard: it writes each graded notebook
    last and makes it read-only (a notebook it is still executing is there already, writable)."""
    def finished(path: Path) -> bool:
        return path.exists() and not path.stat().st_mode & 0o222
    done = set()
    for folder in (Path(shard) / "autograded").glob(f"*/{assignment}"):
        if all(finished(folder / name) for name in notebooks):
            done.add(folder.parent.name)
    return done


def grade_id(cell: dict) -> str | None:
    """nbgrader's id of a cell, or None for an ordinary cell (or a malformed one)."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    nbgrader = meta.get("nbgrader") if isinstance(meta, dict) else None
    return nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None


def reports_dir(course: Path, assignment: str) -> Path:
    return Path(course) / REPORTS_DIR / assignment


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe folder name for a student (or an assignment), or None when
    it is: the one rule that collect applies to ids and preflight to submitted folders."""
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "names the current or the parent folder"
    if len(name) > MAX_ID_LENGTH:
        return f"is {len(name)} characters long"
    if name.startswith("."):
        return "starts with '.'"
    for ch in name:
        if ch in "/\\":
            return f"contains {ch!r}"
        if unicodedata.category(ch) == "Cc":
            return f"contains control characters ({ch!r})"
        if unicodedata.category(ch) == "Cs":
            return "is not valid UTF-8"
    return None
