"""``reports/<assignment>/status.csv``: every student's outcome, one row each.

Columns: student, status (graded, rejected, failed, flagged), reason, repairs (what
preflight mended), review (what the instructor may want to look at). Cells that a
spreadsheet would read as a formula are neutralized.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from .common import reports_dir

COLUMNS = ["student", "status", "reason", "repairs", "review"]


def spreadsheet_safe(value) -> str:
    """A CSV cell that no spreadsheet runs as a formula (OWASP's rule: a leading =, +, -, @,
    tab or carriage return gets a leading apostrophe)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """Write a CSV atomically (a crash leaves the old file or the new one), cells made safe."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([spreadsheet_safe(v) for v in row] for row in rows)
    os.replace(tmp, path)


def write_status(course: Path, assignment: str, results) -> None:
    """Record these students' outcome; the other students' rows (an earlier run) stay."""
    rows = read_status(course, assignment)
    for s in results:
        rows[s.student] = {"student": s.student, "status": s.status, "reason": s.reason,
                           "repairs": "; ".join(s.repairs), "review": "; ".join(s.review)}
    write_csv(reports_dir(course, assignment) / "status.csv", COLUMNS,
              [[rows[k].get(c, "") for c in COLUMNS] for k in sorted(rows)])


def read_status(course: Path, assignment: str) -> dict[str, dict]:
    """``{student: row}`` from status.csv (student ids as written, apostrophe removed)."""
    path = reports_dir(course, assignment) / "status.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = {}
        for row in csv.DictReader(f):
            student = row["student"]
            if student[:1] == "'" and student[1:2] in ("=", "+", "-", "@", "\t", "\r"):
                student = student[1:]
            rows[student] = {**row, "student": student}
        return rows
