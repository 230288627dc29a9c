"""Export: ``grades.csv`` for every student and assignment, and a report per assignment."""
from __future__ import annotations

import csv
from pathlib import Path

from .common import REPORTS_DIR
from .gradebook import db_path as _db_path
from .status import read_status

GRADING_DIR = REPORTS_DIR

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

