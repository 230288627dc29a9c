"""The gradebook's SQL in one place: nbgrader's ``gradebook.db``, read and changed by student rows.

nbgrader owns the schema; grading writes a private copy per shard and only complete
students' rows are copied back, each shard in one transaction, so an interrupted run
leaves every student either fully graded or not at all. A copy is kept before each run.
"""
from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

from .common import REPORTS_DIR

BACKUPS = "backups"   # reports/backups/gradebook-<time>.db
KEEP_BACKUPS = 20


def db_path(course: Path) -> Path:
    return Path(course) / "gradebook.db"


def backups(course: Path) -> list[Path]:
    """The gradebook's backups, newest last."""
    return sorted((Path(course) / REPORTS_DIR / BACKUPS).glob("gradebook-*.db"))


def _way_back(course: Path) -> str:
    found = backups(course)
    if found:
        return (f"restore the latest backup with `cp {found[-1].relative_to(course)} gradebook.db` "
                f"({len(found)} in {REPORTS_DIR}/{BACKUPS}/), or run `make release` to start an empty gradebook")
    return "run `make release` once to create it (no backup exists)"


def check_released(course: Path, assignment: str) -> None:
    """Fail with the way back when the gradebook is missing, corrupt, or lacks the assignment."""
    db = db_path(course)
    if not db.exists():
        raise FileNotFoundError(f"{db} does not exist: {_way_back(course)}")
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            (ok,) = con.execute("PRAGMA quick_check").fetchone()
            if ok != "ok":
                raise sqlite3.DatabaseError(ok)
            known = con.execute("SELECT 1 FROM assignment WHERE name = ?", (assignment,)).fetchone()
    except sqlite3.DatabaseError as e:
        raise ValueError(f"{db} is not a readable gradebook ({e}): {_way_back(course)}") from None
    if not known:
        raise ValueError(f"the gradebook does not know the assignment {assignment!r}: run `make release`")


def backup(course: Path) -> Path:
    """A consistent copy of the gradebook (sqlite's backup API) in ``reports/backups/``; the
    newest :data:`KEEP_BACKUPS` are kept."""
    folder = Path(course) / REPORTS_DIR / BACKUPS
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"gradebook-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}.db"
    with sqlite3.connect(db_path(course)) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    for old in backups(course)[:-KEEP_BACKUPS]:
        old.unlink()
    return target


def _assignment_id(con: sqlite3.Connection, assignment: str, schema: str = "main") -> str:
    (assignment_id,) = con.execute(f"SELECT id FROM {schema}.assignment WHERE name = ?", (assignment,)).fetchone()
    return assignment_id


def merge(main_db: Path, shard_db: Path, assignment: str, students: list[str]) -> None:
    """Copy these students' submission of ``assignment`` (and nothing else) from the shard's
    gradebook into the main one, replacing what was there, in one transaction."""
    if not students:
        return
    con = sqlite3.connect(main_db)
    try:
        con.execute("ATTACH DATABASE ? AS shard", (str(shard_db),))
        with con:   # one transaction: all these students, or none
            assignment_id = _assignment_id(con, assignment)
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
        con.execute("DETACH DATABASE shard")
    finally:
        con.close()


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


def remove_grades(course: Path, assignment: str, students: list[str]) -> None:
    """Forget the grades of these students' submissions (a failed regrade must not leave the old one)."""
    if not students:
        return
    with sqlite3.connect(db_path(course)) as con:
        _delete_submissions(con, _assignment_id(con, assignment), students)
    for student in students:
        shutil.rmtree(Path(course) / "autograded" / student / assignment, ignore_errors=True)


def test_cells(db: Path, assignment: str, notebook: str) -> dict[str, tuple[str, float]]:
    """``{grade_id: (source, max_score)}`` of a notebook's graded cells, as the gradebook has them."""
    query = ("SELECT c.name, s.source, g.max_score FROM grade_cells g JOIN base_cell c ON g.id = c.id "
             "JOIN notebook n ON c.notebook_id = n.id JOIN assignment a ON n.assignment_id = a.id "
             "JOIN source_cell s ON s.name = c.name AND s.notebook_id = n.id "
             "WHERE a.name = ? AND n.name = ?")
    with sqlite3.connect(db) as con:
        return {row[0]: (row[1], row[2]) for row in con.execute(query, (assignment, notebook))}


def auto_scores(db: Path, assignment: str, notebook: str, student: str) -> dict[str, float | None]:
    """``{grade_id: auto_score}`` of one student's submitted notebook."""
    query = ("SELECT c.name, gr.auto_score FROM grade gr JOIN base_cell c ON gr.cell_id = c.id "
             "JOIN submitted_notebook sn ON gr.notebook_id = sn.id "
             "JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
             "JOIN assignment a ON sa.assignment_id = a.id JOIN notebook n ON sn.notebook_id = n.id "
             "WHERE a.name = ? AND n.name = ? AND sa.student_id = ?")
    with sqlite3.connect(db) as con:
        return dict(con.execute(query, (assignment, notebook, student)).fetchall())


def set_auto_scores(db: Path, assignment: str, notebook: str, student: str, scores: dict[str, float]) -> None:
    """Replace the auto scores of these cells (``{grade_id: score}``) of one student's notebook."""
    query = ("UPDATE grade SET auto_score = ? WHERE id IN (SELECT gr.id FROM grade gr "
             "JOIN base_cell c ON gr.cell_id = c.id JOIN submitted_notebook sn ON gr.notebook_id = sn.id "
             "JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
             "JOIN assignment a ON sa.assignment_id = a.id JOIN notebook n ON sn.notebook_id = n.id "
             "WHERE a.name = ? AND n.name = ? AND sa.student_id = ? AND c.name = ?)")
    with sqlite3.connect(db) as con:
        for grade_id, score in scores.items():
            con.execute(query, (float(score), assignment, notebook, student, grade_id))
