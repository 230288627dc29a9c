"""Grading a whole class with nbgrader: one command per step, every student accounted for.

Run from the course root (where ``nbgrader_config.py`` is), after ``make release``::

    python -m coursekit.classroom collect scaling path/to/submissions.zip   # or a folder
    python -m coursekit.classroom grade scaling --jobs 2                    # preflight + autograde
    python -m coursekit.classroom feedback scaling                          # HTML, hidden tests hidden
    python -m coursekit.classroom export                                    # grades.csv + reports

(the Makefile has the same as ``make collect``, ``make grade``, ``make feedback``, ``make grades``).
It wraps nbgrader's own commands and database, and adds what a class needs:

- **preflight**: before grading, each submission is checked and repaired where that is
  safe: a renamed notebook (``scaling (1).ipynb``) is renamed back, a duplicated cell
  (copy-paste keeps nbgrader's grade id, which aborts nbgrader's whole batch) loses its
  duplicate id, a deleted test cell is put back from the release. A submission that
  cannot be graded (no notebook, broken JSON) is rejected with the reason; the others
  are still graded.
- **parallel grading**: the students are split across ``--jobs`` worker processes, each
  running ``nbgrader autograde`` in a private copy of the course with its own copy of
  the gradebook; the results are merged back into ``gradebook.db``.
- **no stale grades**: a submission whose grading fails (the kernel died, ...) has its
  old grade *removed* from the gradebook, and it is listed with the reason.
- **status**: ``grading/<assignment>/status.csv`` lists every student as ``graded``,
  ``rejected`` or ``failed``, with the reason and what preflight repaired.
- **feedback** never shows hidden tests: their source is replaced by a note and their
  tracebacks by the check's teaching message.
- **export**: ``grades.csv`` (one row per student and assignment, with the status), and
  per assignment a report of per-test pass rates and a score histogram.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

__all__ = ["Submission", "preflight", "grade", "feedback", "export", "collect", "HideHiddenTests", "main"]

GRADING_DIR = "grading"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def _nbgrader_bin() -> str:
    """The nbgrader next to this Python (the course's venv), else the one on PATH."""
    local = Path(sys.executable).parent / "nbgrader"
    return str(local) if local.exists() else "nbgrader"


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # alembic, jupyter
    return env


def _release_notebooks(course: Path, assignment: str) -> dict[str, dict]:
    """The released notebooks of an assignment: ``{name: notebook json}``."""
    folder = course / "exercises" / assignment
    notebooks = {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.ipynb"))}
    if not notebooks:
        raise FileNotFoundError(f"no released notebook in {folder}: run `make release` first")
    return notebooks


def _grade_id(cell: dict) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


# --------------------------------------------------------------------------- preflight

@dataclass
class Submission:
    """What preflight found for one student's submission of one assignment."""
    student: str
    status: str = "ok"            # "ok" (to be graded) or "rejected"
    reason: str = ""
    repairs: list[str] = field(default_factory=list)


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
    releases = _release_notebooks(course, assignment)
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
            notes: list[str] = [f"review: {n}" for n in _scan(nb, release)]
            nb = _repair_notebook(nb, release, notes)
            sub.repairs += [f"{name}: {n}" for n in notes]
            path.write_text(json.dumps(nb, indent=1))
    return results


# --------------------------------------------------------------------------- grading

def _db_path(course: Path) -> Path:
    return course / "gradebook.db"


def _check_released(course: Path, assignment: str) -> None:
    db = _db_path(course)
    if not db.exists():
        raise FileNotFoundError(f"{db} does not exist: run `make release` once to create it")
    with sqlite3.connect(db) as con:
        if not con.execute("SELECT 1 FROM assignment WHERE name = ?", (assignment,)).fetchone():
            raise ValueError(f"the gradebook does not know the assignment {assignment!r}: run `make release`")


# --------------------------------------------------------------------------- integrity
#
# Student code runs in the grading kernel before the tests. Three defences, none of them a
# sandbox:
# 1. two cells are added to the graded copy of every notebook (never to the student's file):
#    the first, before any student code, records the identity of everything the checks rely
#    on (coursekit.grading and its modules, torch, torch.Tensor, torch.testing,
#    torch.nn.functional, math, builtins, the modules in sys.modules, IPython's error
#    display, sys.excepthook); the last compares. Monkeypatching any of them, or deleting
#    the record, flags the submission;
# 2. after grading, outside the kernel: every test cell of the graded notebook must have
#    exactly the gradebook's source (hidden tests included), and every score must be what
#    the cell's output gives with the gradebook's points (a kernel that edited its shard's
#    gradebook is caught here);
# 3. the student's code is scanned for references to the grading machinery, the
#    solutions or the gradebook, noted for the instructor's review.
# A flagged submission keeps no grade; it is listed with what was found.

INTEGRITY_TAG = "coursekit_integrity"
INTEGRITY_OK = "coursekit-integrity: ok"
_WATCHED_MODULES = ("builtins", "math", "torch", "torch.testing", "torch.nn.functional", "coursekit.grading")
# names that legitimate code rebinds: IPython's `_` and ipykernel's `input` (every cell), and
# torch.manual_seed (wrapped when torch._dynamo is first imported, e.g. by an optimizer)
_LAZY = {("builtins", "_"), ("builtins", "input"), ("torch", "manual_seed")}

_INTEGRITY_START = """\
def __coursekit_integrity_start():
    import builtins, importlib, pkgutil, sys, types
    import torch, torch.testing, torch.nn.functional
    import coursekit.grading
    names = list(%(watched)r) + ["coursekit.grading." + m.name for m in pkgutil.iter_modules(coursekit.grading.__path__)]
    modules = {name: importlib.import_module(name) for name in names}
    shell = get_ipython()

    def fingerprint():
        seen = {}
        for name, module in modules.items():
            seen["sys.modules[%%r]" %% name] = id(sys.modules.get(name))
            for key, value in list(vars(module).items()):
                if (name, key) in %(lazy)r:   # rebound by IPython, ipykernel or torch itself
                    continue
                seen[name + "." + key] = id(value)
                if isinstance(value, types.FunctionType):
                    seen[name + "." + key + ".__code__"] = id(value.__code__)
                    seen[name + "." + key + ".__defaults__"] = repr(value.__defaults__)
                    seen[name + "." + key + ".__kwdefaults__"] = repr(value.__kwdefaults__)
        for key, value in list(vars(torch.Tensor).items()):
            seen["torch.Tensor." + key] = id(value)
        for key in ("showtraceback", "_showtraceback", "showsyntaxerror", "displayhook", "display_pub", "run_cell"):
            value = getattr(shell, key, None)   # a bound method is a new object each time: compare its function
            seen["IPython." + key] = (id(getattr(value, "__func__", value)), key in vars(shell))
        seen["sys.excepthook"] = id(getattr(sys.excepthook, "__func__", sys.excepthook))
        return seen

    before = fingerprint()

    def compare():
        after = fingerprint()
        changed = sorted(k for k, v in before.items() if after.get(k, "missing") != v)
        return changed
    return compare


__coursekit_integrity_compare = __coursekit_integrity_start()
del __coursekit_integrity_start
"""

_INTEGRITY_END = """\
__coursekit_integrity_changed = __coursekit_integrity_compare()
print(%(ok)r if not __coursekit_integrity_changed else
      "coursekit-integrity: changed " + ", ".join(__coursekit_integrity_changed[:12]))
"""


def _integrity_cells() -> tuple[dict, dict]:
    def cell(source):
        return {"cell_type": "code", "execution_count": None, "id": f"{INTEGRITY_TAG}-{len(source)}",
                "metadata": {INTEGRITY_TAG: True}, "outputs": [], "source": source}
    return (cell(_INTEGRITY_START % {"watched": _WATCHED_MODULES, "lazy": _LAZY}),
            cell(_INTEGRITY_END % {"ok": INTEGRITY_OK}))


_SUSPICIOUS = [
    (r"coursekit\s*\.\s*grading|from\s+coursekit\.grading|import\s+coursekit\.grading", "the grading machinery (coursekit.grading)"),
    (r"assert_close|torch\.testing", "torch.testing"),
    (r"\bbuiltins\b|__builtins__", "builtins"),
    (r"showtraceback|excepthook|displayhook|get_ipython", "IPython's error display"),
    (r"sys\.modules|__code__|__closure__|\bgc\b\.", "interpreter internals"),
    (r"gradebook|solutions/|BEGIN HIDDEN|nbgrader", "the gradebook, the solutions or the hidden tests"),
    (r"__coursekit_integrity", "the integrity check"),
]


def _student_code(nb: dict, release: dict) -> str:
    """The code a student wrote: editable code cells that differ from every released cell."""
    given = {"".join(c["source"]) for c in release["cells"]}
    parts = []
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        source = "".join(cell["source"])
        if cell.get("cell_type") == "code" and not meta.get("locked") and source not in given:
            parts.append(source)
    return "\n".join(parts)


def _scan(nb: dict, release: dict) -> list[str]:
    code = _student_code(nb, release)
    return [f"the code refers to {what}" for pattern, what in _SUSPICIOUS if re.search(pattern, code)]


def _verify(course: Path, shard: Path, assignment: str, student: str, notebooks: list[str]) -> list[str]:
    """What is wrong with a graded submission, checked outside the kernel (empty: nothing)."""
    problems = []
    with sqlite3.connect(_db_path(course)) as main, sqlite3.connect(shard / "gradebook.db") as graded:
        for name in notebooks:
            nb = json.loads((shard / "autograded" / student / assignment / name).read_text())
            notebook = name[:-len(".ipynb")]
            ends = [c for c in nb["cells"] if c["metadata"].get(INTEGRITY_TAG)]
            text = "".join("".join(o.get("text", "")) for o in (ends[-1]["outputs"] if ends else [])
                           if o.get("output_type") == "stream")
            if INTEGRITY_OK not in text:
                found = re.search(r"coursekit-integrity: .*", text)
                problems.append(f"{name}: the integrity check " + (f"reported: {found.group(0)[20:]}" if found
                                                                      else "did not run to the end"))
            query = ("SELECT c.name, s.source, g.max_score FROM grade_cells g JOIN base_cell c ON g.id = c.id "
                     "JOIN notebook n ON c.notebook_id = n.id JOIN assignment a ON n.assignment_id = a.id "
                     "JOIN source_cell s ON s.name = c.name AND s.notebook_id = n.id "
                     "WHERE a.name = ? AND n.name = ?")
            cells = {row[0]: (row[1], row[2]) for row in main.execute(query, (assignment, notebook))}
            scores_query = ("SELECT c.name, gr.auto_score FROM grade gr JOIN base_cell c ON gr.cell_id = c.id "
                            "JOIN submitted_notebook sn ON gr.notebook_id = sn.id "
                            "JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
                            "JOIN assignment a ON sa.assignment_id = a.id JOIN notebook n ON sn.notebook_id = n.id "
                            "WHERE a.name = ? AND n.name = ? AND sa.student_id = ?")
            scores = dict(graded.execute(scores_query, (assignment, notebook, student)).fetchall())
            for cell in nb["cells"]:
                gid = _grade_id(cell)
                if gid not in cells or not cell["metadata"]["nbgrader"].get("grade"):
                    continue
                source, max_score = cells[gid]
                if cell["metadata"]["nbgrader"].get("locked") and "".join(cell["source"]) != source:
                    problems.append(f"{name}: the test cell {gid!r} ran with other code than the gradebook's")
                expected = _cell_score(cell, max_score)
                if expected is not None and scores.get(gid) != expected:
                    problems.append(f"{name}: the score of {gid!r} ({scores.get(gid)}) is not what its output "
                                    f"gives ({expected})")
    return problems


def _cell_score(cell: dict, max_score: float) -> float | None:
    """nbgrader's rule for an autograded code cell, with the gradebook's points."""
    from nbgrader.utils import determine_grade
    if cell.get("cell_type") != "code" or cell["metadata"]["nbgrader"].get("solution"):
        return None
    cell = nbformat.from_dict(copy.deepcopy(cell))
    cell.metadata.nbgrader["points"] = max_score
    return determine_grade(cell)[0]


def _make_shard(course: Path, root: Path, assignment: str, students: list[str]) -> Path:
    """A private course directory: the config, a copy of the gradebook, these students' submissions."""
    root.mkdir(parents=True)
    shutil.copy(course / "nbgrader_config.py", root)
    shutil.copy(_db_path(course), root / "gradebook.db")
    start, end = _integrity_cells()
    for student in students:
        target = root / "submitted" / student / assignment
        shutil.copytree(course / "submitted" / student / assignment, target)
        for path in target.glob("*.ipynb"):
            nb = json.loads(path.read_text())
            nb["cells"] = [start, *nb["cells"], end]
            path.write_text(json.dumps(nb))
    return root


_KNOWN_FAILURES = [
    ("DeadKernelError", "the kernel died while running the notebook (os._exit, a crash, or out of memory)"),
    ("CellTimeoutError", "a cell ran longer than the time limit"),
    ("MemoryError", "the notebook ran out of memory"),
]


def _failure_reason(log: str, student: str) -> str:
    """The reason nbgrader's log gives for a student's failed notebook, in words."""
    mention = re.compile(r"/(?:submitted|autograded)/([^/\s]+)/|student '([^']+)'")
    current, text = None, []
    for line in log.splitlines():          # the log lines that belong to this student's notebook
        found = mention.search(line)
        if found:
            current = found.group(1) or found.group(2)
        if current == student:
            text.append(line)
    text = "\n".join(text)
    for marker, reason in _KNOWN_FAILURES:
        if marker in text:
            return reason
    errors = [line.strip() for line in text.splitlines() if re.match(r"\s*[\w.]+(Error|Exception)\b", line)]
    return (errors[-1] if errors else "autograding failed (see the log in grading/)")[:300]


def _merge(main_db: Path, shard_db: Path, assignment: str, students: list[str]) -> None:
    """Copy these students' submission of ``assignment`` (and nothing else) from the shard's
    gradebook into the main one, replacing what was there."""
    with sqlite3.connect(main_db) as con:
        con.execute("ATTACH DATABASE ? AS shard", (str(shard_db),))
        (assignment_id,) = con.execute("SELECT id FROM assignment WHERE name = ?", (assignment,)).fetchone()
        marks = ",".join("?" * len(students))
        _delete_submissions(con, assignment_id, students)
        con.execute(f"INSERT OR IGNORE INTO student SELECT * FROM shard.student WHERE id IN ({marks})", students)
        con.execute(f"INSERT INTO submitted_assignment SELECT * FROM shard.submitted_assignment "
                    f"WHERE assignment_id = ? AND student_id IN ({marks})", [assignment_id, *students])
        notebooks = (f"SELECT sn.id FROM shard.submitted_notebook sn JOIN shard.submitted_assignment sa "
                     f"ON sn.assignment_id = sa.id WHERE sa.assignment_id = ? AND sa.student_id IN ({marks})")
        con.execute(f"INSERT INTO submitted_notebook SELECT * FROM shard.submitted_notebook "
                    f"WHERE id IN ({notebooks})", [assignment_id, *students])
        for table in ("grade", "comment"):
            con.execute(f"INSERT INTO {table} SELECT * FROM shard.{table} WHERE notebook_id IN ({notebooks})",
                        [assignment_id, *students])
        con.commit()
        con.execute("DETACH DATABASE shard")


def _delete_submissions(con: sqlite3.Connection, assignment_id: str, students: list[str]) -> None:
    marks = ",".join("?" * len(students))
    notebooks = (f"SELECT sn.id FROM submitted_notebook sn JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
                 f"WHERE sa.assignment_id = ? AND sa.student_id IN ({marks})")
    for table in ("grade", "comment"):
        con.execute(f"DELETE FROM {table} WHERE notebook_id IN ({notebooks})", [assignment_id, *students])
    con.execute(f"DELETE FROM submitted_notebook WHERE assignment_id IN (SELECT id FROM submitted_assignment "
                f"WHERE assignment_id = ? AND student_id IN ({marks}))", [assignment_id, *students])
    con.execute(f"DELETE FROM submitted_assignment WHERE assignment_id = ? AND student_id IN ({marks})",
                [assignment_id, *students])


def _remove_grades(course: Path, assignment: str, students: list[str]) -> None:
    """Forget the grades of these students' submissions (a failed regrade must not leave the old one)."""
    if not students:
        return
    with sqlite3.connect(_db_path(course)) as con:
        (assignment_id,) = con.execute("SELECT id FROM assignment WHERE name = ?", (assignment,)).fetchone()
        _delete_submissions(con, assignment_id, students)
        con.commit()
    for student in students:
        shutil.rmtree(course / "autograded" / student / assignment, ignore_errors=True)


def _graded_students(shard: Path, assignment: str, notebooks: list[str]) -> set[str]:
    done = set()
    for folder in (shard / "autograded").glob(f"*/{assignment}"):
        if all((folder / name).exists() for name in notebooks):
            done.add(folder.parent.name)
    return done


def grade(course: Path, assignment: str, *, jobs: int | None = None, timeout: int | None = None,
          students: list[str] | None = None, progress=print) -> list[Submission]:
    """Preflight, then autograde every submission of ``assignment`` in ``jobs`` parallel
    shards, merge the grades into ``gradebook.db`` and write ``grading/<assignment>/status.csv``.

    Args:
        course: the course root.
        assignment: e.g. ``"scaling"``.
        jobs: worker processes; default the number of CPU cores.
        timeout: seconds a single cell may run (nbgrader's ``Execute.timeout``); default
            the course's configuration.
        students: only these students; default every folder in ``submitted/``.
        progress: called with a line of text as grading advances.

    Returns:
        one :class:`Submission` per student, with ``status`` "graded", "rejected", "failed"
        or "flagged" (the integrity checks found something: no grade is kept).
    """
    course = Path(course).resolve()
    _check_released(course, assignment)
    notebooks = list(_release_notebooks(course, assignment))
    results = [s for s in preflight(course, assignment) if students is None or s.student in students]
    for s in results:
        if s.status == "rejected":
            progress(f"{s.student}: rejected, {s.reason}")
    todo = [s.student for s in results if s.status == "ok"]
    _remove_grades(course, assignment, [s.student for s in results if s.status == "rejected"])
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo) or 1))
    shards = [todo[i::jobs] for i in range(jobs)]
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    with tempfile.TemporaryDirectory(prefix=f"grade-{assignment}-") as tmp:
        running = []
        for i, shard_students in enumerate(s for s in shards if s):
            shard = _make_shard(course, Path(tmp) / f"shard{i}", assignment, shard_students)
            args = [_nbgrader_bin(), "autograde", assignment, "--force"]
            if timeout is not None:
                args.append(f"--Execute.timeout={timeout}")
            env = {**_env(), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            log = open(shard / "autograde.log", "w")
            running.append((i, shard, shard_students, log,
                            subprocess.Popen(args, cwd=shard, env=env, stdout=log, stderr=subprocess.STDOUT)))
        total, reported = len(todo), 0
        while any(p.poll() is None for *_, p in running):
            time.sleep(0.5)
            done = sum(len(_graded_students(shard, assignment, notebooks)) for _, shard, *_ in running)
            if done > reported:
                reported = done
                progress(f"graded {done}/{total}")
        for i, shard, shard_students, log, proc in running:
            log.close()
            log_text = (shard / "autograde.log").read_text(errors="replace")
            log_dir = course / GRADING_DIR / assignment / "logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            (log_dir / f"autograde-{i}.log").write_text(log_text)
            ok = sorted(_graded_students(shard, assignment, notebooks) & set(shard_students))
            flagged = {}
            for student in ok:
                problems = _verify(course, shard, assignment, student, notebooks)
                if problems:
                    flagged[student] = "; ".join(problems)
            ok = [student for student in ok if student not in flagged]
            if ok:
                _merge(_db_path(course), shard / "gradebook.db", assignment, ok)
                for student in ok:
                    target = course / "autograded" / student / assignment
                    shutil.rmtree(target, ignore_errors=True)
                    shutil.copytree(shard / "autograded" / student / assignment, target)
            failed = [s for s in shard_students if s not in ok]
            _remove_grades(course, assignment, failed)
            for sub in results:
                if sub.student in flagged:
                    sub.status, sub.reason = "flagged", "integrity: " + flagged[sub.student]
                    progress(f"{sub.student}: flagged for review, {sub.reason}")
                elif sub.student in ok:
                    sub.status = "graded"
                elif sub.student in failed:
                    sub.status, sub.reason = "failed", _failure_reason(log_text, sub.student)
                    progress(f"{sub.student}: failed, {sub.reason}")
    _write_status(course, assignment, results)
    graded = sum(s.status == "graded" for s in results)
    counts = ", ".join(f"{sum(s.status == k for s in results)} {k}" for k in ("rejected", "failed", "flagged"))
    progress(f"{assignment}: {graded} graded, {counts}; see {GRADING_DIR}/{assignment}/status.csv")
    return results


def _write_status(course: Path, assignment: str, results: list[Submission]) -> None:
    """Record these students' outcome; the other students' rows (an earlier run) stay."""
    rows = read_status(course, assignment)
    for s in results:
        rows[s.student] = {"student": s.student, "status": s.status, "reason": s.reason,
                           "repairs": "; ".join(s.repairs)}
    folder = course / GRADING_DIR / assignment
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "status.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["student", "status", "reason", "repairs"])
        writer.writeheader()
        writer.writerows(rows[k] for k in sorted(rows))


def read_status(course: Path, assignment: str) -> dict[str, dict]:
    path = Path(course) / GRADING_DIR / assignment / "status.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


# --------------------------------------------------------------------------- feedback

try:
    from nbgrader.preprocessors import NbGraderPreprocessor as _Base
except ImportError:  # nbgrader is an instructor's tool; students do not need it
    _Base = object


class HideHiddenTests(_Base):
    """Feedback preprocessor: a hidden-test cell shows a note instead of its source, and an
    error in it shows only the check's message, never a traceback line of the hidden code."""

    def preprocess(self, nb, resources):
        nb.cells = [c for c in nb.cells if not c.get("metadata", {}).get(INTEGRITY_TAG)]
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        source = cell.get("source", "")
        if cell.get("cell_type") != "code" or HIDDEN_BEGIN not in source:
            return cell, resources
        before, _, rest = source.partition(HIDDEN_BEGIN)
        after = rest.partition(HIDDEN_END)[2]
        cell["source"] = (before + after).rstrip() + "\n# (hidden tests: they ran here, their code is not shown)"
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                message = output.get("evalue", "")
                output["traceback"] = [f"{output.get('ename', 'Error')}: {message}"]
        return cell, resources


def feedback(course: Path, assignment: str) -> None:
    """``nbgrader generate_feedback`` for the graded students (hidden tests hidden)."""
    course = Path(course).resolve()
    subprocess.run([_nbgrader_bin(), "generate_feedback", assignment, "--force"], cwd=course,
                   env=_env(), check=True)


# --------------------------------------------------------------------------- export and report

def export(course: Path, output: str = "grades.csv") -> Path:
    """``grades.csv`` with every student of the gradebook and every assignment: score,
    max_score and status (graded, rejected, failed, not submitted), and per assignment a
    report (``grading/<assignment>/report.md`` and ``report.png``)."""
    from nbgrader.api import Gradebook, MissingEntry

    course = Path(course).resolve()
    rows, per_assignment = [], {}
    with Gradebook(f"sqlite:///{_db_path(course)}") as gb:
        students = sorted(s.id for s in gb.students)
        for assignment in sorted(a.name for a in gb.assignments):
            status = read_status(course, assignment)
            max_score = gb.find_assignment(assignment).max_score
            cells, scores = {}, []
            for student in sorted(set(students) | set(status)):
                info = status.get(student, {})
                try:
                    sub = gb.find_submission(assignment, student)
                except MissingEntry:
                    state = info.get("status") or "not submitted"
                    rows.append([assignment, student, "", max_score, state, info.get("reason", "")])
                    continue
                score = sub.score
                scores.append(score)
                for nb in sub.notebooks:
                    for g in nb.grades:
                        if g.auto_score is not None:
                            passed, count = cells.get(g.name, (0, 0))
                            cells[g.name] = (passed + (g.auto_score >= g.max_score), count + 1)
                rows.append([assignment, student, score, max_score, info.get("status") or "graded",
                             info.get("repairs", "")])
            per_assignment[assignment] = (cells, scores, max_score)
    path = course / output
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["assignment", "student_id", "score", "max_score", "status", "notes"])
        writer.writerows(rows)
    for assignment, (cells, scores, max_score) in per_assignment.items():
        if scores:
            _report(course / GRADING_DIR / assignment, assignment, cells, scores, max_score)
    return path


def _report(folder: Path, assignment: str, cells: dict, scores: list[float], max_score: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(scores, bins=min(20, max(5, len(scores))), range=(0, max_score), color="tab:blue")
    ax.set(xlabel=f"score (of {max_score:g})", ylabel="students", title=f"{assignment}: {len(scores)} graded")
    fig.tight_layout()
    fig.savefig(folder / "report.png", dpi=100)
    plt.close(fig)
    lines = [f"# {assignment}", "", f"{len(scores)} graded, mean score {sum(scores) / len(scores):.2f} "
             f"of {max_score:g}", "", "| test cell | passed | pass rate |", "|---|---|---|"]
    for name, (passed, count) in cells.items():
        lines.append(f"| {name} | {passed}/{count} | {100 * passed / count:.0f} % |")
    lines += ["", "![score histogram](report.png)", ""]
    (folder / "report.md").write_text("\n".join(lines))


# --------------------------------------------------------------------------- collect

def collect(course: Path, assignment: str, source: Path) -> list[str]:
    """Put submissions at ``submitted/<student>/<assignment>/``: from a folder laid out as
    ``<student>/<assignment>/*.ipynb`` (or ``<student>/*.ipynb``), or from an LMS zip whose
    files are named ``<student>_<anything>_<notebook>.ipynb`` (``alice_12345_attempt_scaling.ipynb``),
    through ``nbgrader zip_collect``. Returns the students."""
    course, source = Path(course).resolve(), Path(source).resolve()
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise ValueError(f"{source} is neither a folder nor a zip file")
        archive = course / "downloaded" / assignment / "archive"
        archive.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, archive)
        names = "|".join(re.escape(name) for name in _release_notebooks(course, assignment))
        regexp = rf".*/(?P<student_id>[^_/]+)_[^/]*?(?P<file_id>{names})$"   # matched on the whole path
        subprocess.run([_nbgrader_bin(), "zip_collect", assignment, "--force",
                        f"--FileNameCollectorPlugin.named_regexp={regexp}"],
                       cwd=course, env=_env(), check=True)
        return sorted(p.parent.name for p in (course / "submitted").glob(f"*/{assignment}"))
    students = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        inner = folder / assignment if (folder / assignment).is_dir() else folder
        target = course / "submitted" / folder.name / assignment
        target.mkdir(parents=True, exist_ok=True)
        for path in inner.glob("*.ipynb"):
            shutil.copy(path, target / path.name)
        students.append(folder.name)
    return students


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit.classroom", description=__doc__.split("\n")[0])
    parser.add_argument("--course", default=".", help="the course root (default: the current directory)")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("collect", help="put submissions (a folder or an LMS zip) into submitted/")
    p.add_argument("assignment")
    p.add_argument("source")
    p = commands.add_parser("grade", help="preflight and autograde every submission of an assignment")
    p.add_argument("assignment")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU cores)")
    p.add_argument("--timeout", type=int, default=None, help="seconds a cell may run")
    p = commands.add_parser("feedback", help="HTML feedback for the graded submissions")
    p.add_argument("assignment")
    p = commands.add_parser("export", help="grades.csv and a report per assignment")
    p.add_argument("--output", default="grades.csv")
    args = parser.parse_args(argv)
    course = Path(args.course)
    try:
        if args.command == "collect":
            students = collect(course, args.assignment, Path(args.source))
            print(f"{len(students)} submissions of {args.assignment} in submitted/")
        elif args.command == "grade":
            results = grade(course, args.assignment, jobs=args.jobs, timeout=args.timeout)
            return 0 if all(s.status == "graded" for s in results) else 3
        elif args.command == "feedback":
            feedback(course, args.assignment)
        else:
            print(f"wrote {export(course, args.output)}")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
