"""Preflight: before grading, check each submission and repair what is safe to repair.

A renamed notebook (``scaling (1).ipynb``) is renamed back, an nbformat 3 (or 2) notebook
is converted to nbformat 4, a duplicated cell (a copy keeps nbgrader's grade id, which
would abort nbgrader's whole batch) loses its duplicate id, a deleted test cell is put
back from the release, and stored outputs are dropped. A submission that cannot be graded
(malformed, too big, a symlink, an unsafe folder name) is rejected with the reason; the
others go on: no error in one student's files stops the batch.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .common import ALLOWED_ID, grade_id as _grade_id, name_problem, release_notebooks
from .integrity import scan

#: a notebook bigger than this is rejected (its outputs alone could exhaust memory)
MAX_NOTEBOOK_MB = 50
_MB = 1_000_000
#: the nbformat major versions converted to nbformat 4 (those this nbformat can read)
CONVERTIBLE = tuple(v for v in (2, 3) if v in nbformat.versions)


@dataclass
class Submission:
    """What preflight found for one student's submission of one assignment."""
    student: str
    status: str = "ok"            # "ok" (to be graded) or "rejected"
    reason: str = ""
    repairs: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)   # for the instructor: what the code refers to


class Rejected(Exception):
    """A submission that cannot be graded; the message is the reason given to the instructor."""


def _kind(value) -> str:
    """The JSON name of a value's type, as a student would see it in the file."""
    names = {dict: "an object (dict)", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _first_line(e: BaseException) -> str:
    """``"TypeError: message"``: the exception's first line, at most 200 characters."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:200]


# --------------------------------------------------------------------------- checks

def _check_structure(nb, name: str) -> None:
    """Raise :class:`Rejected` unless ``nb`` (parsed JSON) has the shape of an nbformat 4
    notebook that the repairs below can walk: an object with a list of cell objects, each
    with object metadata, object nbgrader metadata and a string or list-of-strings source.
    (nbformat's schema validation follows, for everything else.)"""
    if not isinstance(nb, dict):
        raise Rejected(f"{name}: the notebook is {_kind(nb)}; a notebook must be a JSON object")
    if "metadata" in nb and not isinstance(nb["metadata"], dict):
        raise Rejected(f"{name}: the notebook's 'metadata' is {_kind(nb['metadata'])}; it must be an object")
    if "cells" not in nb:
        raise Rejected(f"{name}: the notebook has no 'cells'; a notebook's cells must be a list")
    cells = nb["cells"]
    if not isinstance(cells, list):
        raise Rejected(f"{name}: 'cells' is {_kind(cells)}; a notebook's cells must be a list")
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise Rejected(f"{name}: cell {i} is {_kind(cell)}; each cell must be an object")
        meta = cell.get("metadata", {})
        if not isinstance(meta, dict):
            raise Rejected(f"{name}: the 'metadata' of cell {i} is {_kind(meta)}; it must be an object")
        nbgrader_meta = meta.get("nbgrader", {})
        if not isinstance(nbgrader_meta, dict):
            raise Rejected(f"{name}: the nbgrader metadata of cell {i} is {_kind(nbgrader_meta)}; "
                           f"it must be an object")
        source = cell.get("source")
        if not (isinstance(source, str) or isinstance(source, list) and all(isinstance(s, str) for s in source)):
            raise Rejected(f"{name}: the 'source' of cell {i} is {_kind(source)}"
                           f"{' with items that are not strings' if isinstance(source, list) else ''}; "
                           f"it must be a string or a list of strings")


def _load(path: Path, name: str, notes: list[str]) -> dict:
    """The notebook at ``path`` as nbformat 4 JSON, converted from nbformat 3 (or 2) if need
    be (noted in ``notes``), checked by :func:`_check_structure` and by nbformat's schema.

    Raises:
        Rejected: the file is too big, not UTF-8 JSON, of an unknown nbformat version, not
            convertible, or malformed.
    """
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_MB * _MB:
        raise Rejected(f"{name} is {size / _MB:.1f} MB; the limit is {MAX_NOTEBOOK_MB} MB")
    try:
        text = path.read_bytes().decode("utf-8")
        nb = json.loads(text)
    except ValueError as e:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Rejected(f"{name} is not a valid notebook ({_first_line(e)})") from None
    if not isinstance(nb, dict):
        raise Rejected(f"{name}: the notebook is {_kind(nb)}; a notebook must be a JSON object")
    version = nb.get("nbformat")
    if version in CONVERTIBLE:
        try:
            nb = json.loads(json.dumps(nbformat.convert(nbformat.reads(text, as_version=nbformat.NO_CONVERT), 4)))
        except Exception as e:   # nbformat's converters assume a well-formed notebook
            raise Rejected(f"{name}: the nbformat {version} notebook could not be converted to nbformat 4 "
                           f"({_first_line(e)})") from None
        notes.append(f"converted from nbformat {version}")
    elif version != 4:
        older = " or ".join(map(str, reversed(CONVERTIBLE)))
        raise Rejected(f"{name} has nbformat {version!r}; a notebook must have nbformat 4 "
                       f"(or {older}, which is converted to 4)")
    _check_structure(nb, name)
    for cell in nb["cells"]:   # outputs are recomputed: drop them (a huge one costs memory)
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    _unique_cell_ids(nb)
    try:
        nbformat.validate(nbformat.from_dict(nb))
    except nbformat.ValidationError as e:
        raise Rejected(f"{name} is not a valid notebook ({_first_line(e)})") from None
    return nb


# --------------------------------------------------------------------------- repairs

def _repair_notebook(nb: dict, release: dict, notes: list[str]) -> dict:
    """Duplicate grade ids lose all but their last occurrence's id (nbgrader's convention);
    deleted grade cells are put back from the release, after the cell before them."""
    seen: set[str] = set()
    for cell in reversed(nb["cells"]):
        gid = _grade_id(cell)
        if gid is None:
            continue
        if gid in seen:
            cell["metadata"].pop("nbgrader")
            notes.append(f"a second cell with id {gid!r} (a copy) was made an ordinary cell")
        seen.add(gid)
    release_ids = [(_grade_id(c), c) for c in release["cells"]]
    for index, (gid, cell) in enumerate(release_ids):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if gid is None or gid in seen or not meta.get("grade"):
            continue
        previous = [g for g, _ in release_ids[:index] if g is not None and g in seen]
        position = 0
        if previous:
            position = 1 + max(i for i, c in enumerate(nb["cells"]) if _grade_id(c) == previous[-1])
        nb["cells"].insert(position, copy.deepcopy(cell))
        seen.add(gid)
        notes.append(f"the deleted cell {gid!r} was put back")
    return nb


def _unique_cell_ids(nb: dict) -> None:
    """A copied cell keeps its cell id too: give copies new ones (nbformat would, noisily)."""
    seen: set[str] = set()
    for cell in nb["cells"]:
        cid = cell.get("id")
        if not isinstance(cid, str):   # a wrong type is for nbformat's validation to report
            continue
        n = 1
        while cell["id"] in seen:
            cell["id"], n = f"{cid}-{n}", n + 1
        seen.add(cell["id"])


# --------------------------------------------------------------------------- one student

def _find_notebook(folder: Path, name: str, releases: dict, sub: Submission) -> Path:
    """``folder / name``, renamed back from the one other notebook in ``folder`` if need be.

    Raises:
        Rejected: the notebook is a symlink or a folder, or missing with no single candidate.
    """
    path = folder / name
    if path.is_symlink():
        raise Rejected(f"{name} is a symlink; a submitted notebook must be a plain file (symlinks are not followed)")
    if path.exists():
        if not path.is_file():
            raise Rejected(f"{name} is a folder; a submitted notebook must be a plain file")
        return path
    notebooks = sorted(p for p in folder.glob("*.ipynb") if p.name not in releases)
    candidates = [p for p in notebooks if not p.is_symlink() and p.is_file()]
    if len(candidates) == 1:
        candidates[0].rename(path)
        sub.repairs.append(f"{candidates[0].name!r} was renamed {name!r}")
        return path
    found = ", ".join(p.name + (" (a symlink, ignored)" if p.is_symlink() else "") for p in notebooks)
    raise Rejected(f"{name} is missing (found: {found or 'no notebook'})")


def _check_submission(folder: Path, sub: Submission, releases: dict[str, dict]) -> None:
    """Check and repair one student's submission folder in place, filling in ``sub``.

    Raises:
        Rejected: the submission cannot be graded.
    """
    for name, release in releases.items():
        path = _find_notebook(folder, name, releases, sub)
        notes: list[str] = []
        nb = _load(path, name, notes)
        sub.review += [f"{name}: {n}" for n in scan(nb, release)]
        nb = _repair_notebook(nb, release, notes)
        sub.repairs += [f"{name}: {n}" for n in notes]
        path.write_text(json.dumps(nb, indent=1))


def _student_folders(submitted: Path, assignment: str) -> list[tuple[str, Path]]:
    """``(student, submitted/<student>/<assignment>)`` for every student folder that holds
    this assignment (or is a symlink, whose content is never looked at), sorted by student."""
    if not submitted.is_dir():
        return []
    found = []
    for entry in submitted.iterdir():
        folder = entry / assignment
        if entry.is_symlink() or (entry.is_dir() and (folder.is_symlink() or folder.exists())):
            found.append((entry.name, folder))
    return sorted(found)


def preflight(course: Path, assignment: str, submitted: Path | None = None) -> list[Submission]:
    """Check and repair every submission of ``assignment`` in place.

    Every ``submitted/<student>/<assignment>/`` folder gives one :class:`Submission`:
    ``"ok"`` (to be graded, with the repairs made and notes for review) or ``"rejected"``
    with the reason. No error in one student's files stops the others: an unexpected one
    rejects that student with ``"<ExceptionType>: <message>"``.

    Args:
        course: the course root (``exercises/<assignment>/`` holds the released notebooks).
        assignment: e.g. ``"scaling"``.
        submitted: the submissions' folder; default ``course / "submitted"``.

    Returns:
        one :class:`Submission` per student folder, sorted by student.

    Raises:
        FileNotFoundError: the assignment has no released notebook.
    """
    course = Path(course)
    submitted = Path(submitted) if submitted is not None else course / "submitted"
    releases = release_notebooks(course, assignment)
    results = []
    for student, folder in _student_folders(submitted, assignment):
        sub = Submission(student)
        results.append(sub)
        try:
            if (problem := name_problem(student)) is not None:
                raise Rejected(f"the student folder name {student!r} {problem}; {ALLOWED_ID}")
            for link in (folder.parent, folder):
                if link.is_symlink():
                    raise Rejected(f"{link.relative_to(submitted)} is a symlink; a submission must be "
                                   f"a plain folder (symlinks are not followed)")
            if not folder.is_dir():
                raise Rejected(f"{folder.relative_to(submitted)} is a file; a submission must be a folder")
            _check_submission(folder, sub, releases)
        except Rejected as e:
            sub.status, sub.reason = "rejected", str(e)
        except Exception as e:   # whatever else goes wrong concerns this student only
            sub.status, sub.reason = "rejected", _first_line(e)
    return results
