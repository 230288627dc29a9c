"""Export: ``grades.csv`` for every student and assignment, and a report per assignment.

Every student of the gradebook or of an assignment's ``status.csv`` gets a row per
assignment, with the status graded, rejected, failed, flagged or not submitted: nobody is
dropped. The report (``reports/<assignment>/report.md`` and ``report.png``) keeps the
autograded points apart from those graded by hand, lists only the autograded test cells,
and counts the students who have no grade.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .common import reports_dir
from .gradebook import db_path as _db_path
from .status import read_status, write_csv

COLUMNS = ["assignment", "student_id", "score", "max_score", "status", "notes"]
#: every status a student can have in grades.csv and the reports, in the reports' order
STATUSES = ("graded", "rejected", "failed", "flagged", "not submitted")
_NO_GRADE = ("rejected", "failed")   # statuses whose grade (if any) is stale: never exported


@dataclass
class _Summary:
    """One assignment's figures for its report."""
    auto_cells: dict[tuple[str, str], float]          # (notebook, grade id) -> points, autograded tests
    hand_cells: dict[tuple[str, str], tuple[float, str]]   # (notebook, grade id) -> (points, cell type)
    auto_scores: list[float] = field(default_factory=list)   # per graded student
    passed: dict[tuple[str, str], int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))

    @property
    def auto_max(self) -> float:
        return sum(self.auto_cells.values())

    @property
    def hand_max(self) -> float:
        return sum(points for points, _ in self.hand_cells.values())


def _split_cells(assignment) -> tuple[dict, dict]:
    """The graded cells of an nbgrader ``Assignment``: ``({(notebook, id): points}`` of the
    autograded tests, ``{(notebook, id): (points, cell type)}`` of the cells graded by hand)``.

    A grade cell that is also a solution cell is the student's answer, graded by hand (an
    unanswered one gets an automatic 0, so ``auto_score`` alone does not tell them apart);
    task cells are graded by hand too.
    """
    auto, hand = {}, {}
    for nb in assignment.notebooks:
        answers = {c.name for c in nb.solution_cells}
        for cell in nb.grade_cells:
            if cell.name in answers:
                hand[nb.name, cell.name] = (cell.max_score, cell.cell_type)
            else:
                auto[nb.name, cell.name] = cell.max_score
        for cell in nb.task_cells:
            hand[nb.name, cell.name] = (cell.max_score, "task")
    return auto, hand


def _add_graded(summary: _Summary, submission) -> bool:
    """Count a graded submission in ``summary``; return whether a hand-graded cell still
    waits for its grade."""
    score, pending = 0.0, False
    for nb in submission.notebooks:
        for g in nb.grades:
            key = (nb.name, g.name)
            if key in summary.auto_cells:
                score += g.auto_score or 0.0
                full = g.auto_score is not None and g.auto_score >= summary.auto_cells[key]
                summary.passed[key] = summary.passed.get(key, 0) + full
            elif key in summary.hand_cells and g.needs_manual_grade:
                pending = True
    summary.auto_scores.append(score)
    return pending


def export(course: Path, output: str = "grades.csv") -> Path:
    """Write ``grades.csv`` and a report per assignment.

    ``grades.csv`` has one row per assignment and student of the gradebook or of the
    assignment's ``status.csv``: ``score`` (nbgrader's total: autograded, plus what was
    graded by hand) and ``max_score`` for a graded or flagged student (whose autograded points
    are the trusted checker's), empty otherwise; ``status``
    graded, rejected, failed, flagged or not submitted; ``notes`` the reason, or the
    repairs preflight made. Cells a spreadsheet would run as a formula are neutralized.

    Args:
        course: the course root (where ``gradebook.db`` is).
        output: the CSV's path, relative to ``course``.

    Returns:
        the path of ``grades.csv``.
    """
    from nbgrader.api import Gradebook, MissingEntry

    course = Path(course).resolve()
    rows, summaries = [], {}
    with Gradebook(f"sqlite:///{_db_path(course)}") as gb:
        students = {s.id for s in gb.students}
        for assignment in sorted(a.name for a in gb.assignments):
            found = gb.find_assignment(assignment)
            max_score = found.max_score
            summary = summaries[assignment] = _Summary(*_split_cells(found))
            status = read_status(course, assignment)
            for student in sorted(students | set(status)):
                info = status.get(student, {})
                recorded = info.get("status", "")
                try:
                    submission = gb.find_submission(assignment, student)
                except MissingEntry:
                    submission = None
                if recorded in _NO_GRADE:
                    state, score, notes = recorded, "", info.get("reason", "")
                elif submission is not None:   # graded, or flagged with its trusted score
                    pending = _add_graded(summary, submission)
                    state, score = ("flagged" if recorded == "flagged" else "graded"), submission.score
                    notes = "; ".join(filter(None, [info.get("reason", "") if state == "flagged" else "",
                                                    info.get("repairs", ""),
                                                    "hand grading pending" if pending else ""]))
                elif recorded == "flagged":
                    state, score, notes = "flagged", "", info.get("reason", "")
                elif recorded:
                    state, score = "failed", ""
                    notes = (f"status.csv says {recorded!r} but the gradebook has no grade: grade again "
                             f"({info.get('reason') or 'no reason recorded'})")
                else:
                    state, score, notes = "not submitted", "", ""
                summary.counts[state] += 1
                rows.append([assignment, student, score, max_score, state, notes])
    path = course / output
    write_csv(path, COLUMNS, rows)
    for assignment, summary in summaries.items():
        if sum(summary.counts.values()):
            _report(reports_dir(course, assignment), assignment, summary)
    return path


def _report(folder: Path, assignment: str, summary: _Summary) -> None:
    """``report.png`` (autograded scores of the graded students, and every status's count)
    and ``report.md`` (the counts, the autograded mean apart from the points graded by hand,
    each autograded test's pass rate)."""
    folder.mkdir(parents=True, exist_ok=True)
    _figure(folder / "report.png", assignment, summary)
    scores, graded = summary.auto_scores, len(summary.auto_scores)
    lines = [f"# {assignment}", "", "| status | students |", "|---|---|"]
    lines += [f"| {state} | {count} |" for state, count in summary.counts.items()]
    lines += [f"| total | {sum(summary.counts.values())} |", ""]
    if graded:
        lines.append(f"autograded: mean {sum(scores) / graded:.1f} of {summary.auto_max:g} "
                     f"({graded} graded, the tests below)")
    else:
        lines.append(f"autograded: no graded submission yet (maximum {summary.auto_max:g})")
    if summary.hand_cells:
        kinds = {"markdown": "free text", "code": "code", "task": "task"}
        cells = ", ".join(f"`{_label(key, summary)}` ({kinds.get(kind, kind)}, {points:g} points)"
                          for key, (points, kind) in summary.hand_cells.items())
        lines.append(f"graded by hand: {summary.hand_max:g} points, not included above: {cells}")
    lines += ["", "| test cell | points | passed | pass rate |", "|---|---|---|---|"]
    for key, points in summary.auto_cells.items():
        passed = summary.passed.get(key, 0)
        rate = f"{100 * passed / graded:.0f} %" if graded else "-"
        lines.append(f"| {_label(key, summary)} | {points:g} | {passed}/{graded} | {rate} |")
    lines += ["", "![autograded scores and every student's status](report.png)", ""]
    (folder / "report.md").write_text("\n".join(lines))


def _label(key: tuple[str, str], summary: _Summary) -> str:
    """A cell's grade id, prefixed with its notebook when the assignment has several."""
    notebooks = {nb for nb, _ in [*summary.auto_cells, *summary.hand_cells]}
    return key[1] if len(notebooks) <= 1 else f"{key[0]}: {key[1]}"


def _figure(path: Path, assignment: str, summary: _Summary) -> None:
    """Left: histogram of the graded students' autograded scores; right: students per status."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    scores, top = summary.auto_scores, summary.auto_max or 1.0
    fig, (hist, bars) = plt.subplots(1, 2, figsize=(8, 3), gridspec_kw={"width_ratios": [3, 2]})
    if scores:
        hist.hist(scores, bins=min(20, max(5, len(scores))), range=(0, top), color="tab:blue")
    else:
        hist.text(0.5, 0.5, "no graded submission", ha="center", va="center", transform=hist.transAxes)
    hist.set(xlabel=f"autograded score (of {summary.auto_max:g})", ylabel="students",
             title=f"{assignment}: {len(scores)} graded", xlim=(0, top))
    counts = list(summary.counts.values())
    colors = ["tab:blue", "tab:red", "tab:orange", "tab:purple", "tab:gray"]
    drawn = bars.bar(range(len(STATUSES)), counts, color=colors)
    bars.bar_label(drawn)
    bars.set_xticks(range(len(STATUSES)), [s.replace(" ", "\n") for s in STATUSES], fontsize=8)
    bars.set(ylabel="students", title="every student", ylim=(0, max(counts + [1]) * 1.2))
    for ax in (hist, bars):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))   # students come whole
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
