"""Write the tables that list the course's chapters and assignments, from coursekit.course.

    .venv/bin/python tools/course_tables.py           # rewrite the tables in place
    .venv/bin/python tools/course_tables.py --check   # exit 1 and name each stale table

Each table sits between two marker lines in its file (a MyST comment in the book's pages, an
HTML comment in the README); the text around them is not touched. ``tests/test_course.py``
runs the check, so a table edited by hand, or a registry changed without rerunning this,
fails the suite.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coursekit.course import CHAPTERS  # noqa: E402


def _points(value: float) -> str:
    return f"{value:g}"


def intro_table() -> list[str]:
    """book/intro.md: each chapter and what a reader learns in it."""
    rows = ["| chapter | what you learn |", "|---|---|"]
    rows += [f"| {{doc}}`{c.name}` | {c.learn} |" for c in CHAPTERS]
    return rows


def assignments_table() -> list[str]:
    """book/assignments.md: each assignment, its chapter, what the student implements, its
    points and the student notebook to download."""
    rows = ["| assignment | read first | you implement | points | student notebook |",
            "|---|---|---|---|---|"]
    for c in CHAPTERS:
        a = c.assignment
        if a is None:
            continue
        rows.append(f"| {a.title} | {{doc}}`{c.name}` | {a.implement} | "
                    f"{_points(a.autograded)} + {_points(a.manual)} | "
                    f"{{download}}`{a.name}.ipynb <../{a.notebook}>` |")
    return rows


def readme_table() -> list[str]:
    """README.md: each chapter with its assignment, the modules behind them and the points."""
    rows = ["| chapter (`book/`) | assignment (`solutions/`, `exercises/`) | coursekit modules | checks | points |",
            "|---|---|---|---|---|"]
    for c in CHAPTERS:
        a = c.assignment
        modules = ", ".join(f"`{m.removeprefix('coursekit.')}`" for m in c.modules)
        if a is None:
            rows.append(f"| `{c.name}` | – | {modules} | – | – |")
            continue
        rows.append(f"| `{c.name}` | `{a.name}` | {modules} | `{a.grading.removeprefix('coursekit.')}` | "
                    f"{_points(a.autograded)} autograded + {_points(a.manual)} by hand |")
    return rows


MYST = ("% BEGIN generated table: edit coursekit/course.py, then run tools/course_tables.py",
        "% END generated table")
HTML = ("<!-- BEGIN generated table: edit coursekit/course.py, then run tools/course_tables.py -->",
        "<!-- END generated table -->")

TABLES = {  # file -> (markers, table)
    "book/intro.md": (MYST, intro_table),
    "book/assignments.md": (MYST, assignments_table),
    "README.md": (HTML, readme_table),
}


def rewritten(text: str, markers: tuple[str, str], table: list[str], name: str) -> str:
    """``text`` with the lines between the markers replaced by ``table``.

    Raises:
        ValueError: if the markers are missing, repeated or out of order.
    """
    lines = text.split("\n")
    begin, end = markers
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    stops = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) != 1 or len(stops) != 1 or stops[0] < starts[0]:
        raise ValueError(f"{name} must hold the line {begin!r} once, followed by {end!r} once; "
                         f"found the first {len(starts)} time(s) and the second {len(stops)} time(s)")
    return "\n".join(lines[:starts[0] + 1] + table + lines[stops[0]:])


def stale(root: Path = ROOT) -> list[str]:
    """The files whose table differs from the registry's."""
    out = []
    for name, (markers, table) in TABLES.items():
        text = (root / name).read_text()
        if rewritten(text, markers, table(), name) != text:
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale tables (exit 1)")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        for name in names:
            print(f"{name}: its table is not coursekit/course.py's: run tools/course_tables.py")
        return 1 if names else 0
    for name, (markers, table) in TABLES.items():
        path = ROOT / name
        text = path.read_text()
        new = rewritten(text, markers, table(), name)
        if new != text:
            path.write_text(new)
            print(f"rewrote the table of {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
