"""Preflight: before grading, check each submission and repair what is safe to repair.

A renamed notebook (``scaling (1).ipynb``) is renamed back, a duplicated cell (a copy keeps
nbgrader's grade id, which would abort nbgrader's whole batch) loses its duplicate id, a
deleted test cell is put back from the release, and stored outputs are dropped. A
submission that cannot be graded is rejected with the reason; the others go on.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .common import grade_id as _grade_id, release_notebooks
from .integrity import scan

@dataclass
class Submission:
    """What preflight found for one student's submission of one assignment."""
    student: str
    status: str = "ok"            # "ok" (to be graded) or "rejected"
    reason: str = ""
    repairs: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)   # for the instructor: what the code refers to


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
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return
    seen: set[str] = set()
    for cell in nb["cells"]:
        cid = cell.get("id") if isinstance(cell, dict) else None
        if cid is None:
            continue
        n = 1
        while cell["id"] in seen:
            cell["id"], n = f"{cid}-{n}", n + 1
        seen.add(cell["id"])


def preflight(course: Path, assignment: str, submitted: Path | None = None) -> list[Submission]:
    """Check and repair every submission of ``assignment`` in ``submitted/`` in place;
    return one :class:`Submission` per student folder."""
    course = Path(course)
    submitted = submitted or course / "submitted"
    releases = release_notebooks(course, assignment)
    results = []
    for folder in sorted(p for p in submitted.glob(f"*/{assignment}") if p.is_dir()):
        sub = Submission(folder.parent.name)
        results.append(sub)
        for name, release in releases.items():
            path = folder / name
            if not path.exists():
                candidates = sorted(p for p in folder.glob("*.ipynb") if p.name not in releases)
                if len(candidates) == 1:
                    candidates[0].rename(path)
                    sub.repairs.append(f"{candidates[0].name!r} was renamed {name!r}")
                else:
                    found = ", ".join(p.name for p in candidates) or "no notebook"
                    sub.status, sub.reason = "rejected", f"{name} is missing (found: {found})"
                    break
            try:
                nb = json.loads(path.read_text())
                _unique_cell_ids(nb)
                nbformat.validate(nbformat.from_dict(nb))
            except (ValueError, UnicodeDecodeError, nbformat.ValidationError) as e:
                first = str(e).strip().splitlines()[0][:200]
                sub.status, sub.reason = "rejected", f"{name} is not a valid notebook ({type(e).__name__}: {first})"
                break
            for cell in nb["cells"]:   # outputs are recomputed: drop them (a huge one costs memory)
                if cell.get("cell_type") == "code":
                    cell["outputs"], cell["execution_count"] = [], None
            sub.review += [f"{name}: {n}" for n in scan(nb, release)]
            notes: list[str] = []
            nb = _repair_notebook(nb, release, notes)
            sub.repairs += [f"{name}: {n}" for n in notes]
            path.write_text(json.dumps(nb, indent=1))
    return results

