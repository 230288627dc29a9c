"""Throughput of grading a class: plain sequential `nbgrader autograde` against
`coursekit.classroom.grade` (preflight, then the students sharded over worker processes).

Usage: .venv/bin/python benchmarks/grading.py [--assignment scaling] [--students 16] [--jobs N]

Both grade the same synthetic class (correct submissions and submissions with classic
mistakes) in fresh copies of the course; the scores must be identical. The last line is
`speedup=<sequential / parallel> per_submission_s=<parallel wall time / students>`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coursekit import classroom  # noqa: E402

NBGRADER = str(Path(sys.executable).parent / "nbgrader")
# per assignment: (grade_id, old, new) edits that make a wrong submission
MISTAKES = {
    "scaling": [("standard_scaler", "X.std(dim=0, correction=0)", "X.std(dim=0)")],
    "dropout": [("dropout", "return input * keep / (1 - p)", "return input * keep")],
    "early_stopping": [("early_stopping", "return self.num_bad_epochs >= self.patience",
                        "return self.num_bad_epochs > self.patience")],
}


def env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def make_course(root: Path, assignment: str, students: int) -> Path:
    root.mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copytree(ROOT / "solutions" / assignment, root / "solutions" / assignment)
    subprocess.run([NBGRADER, "generate_assignment", assignment, "--force"], cwd=root, env=env(),
                   check=True, capture_output=True)
    solution = json.loads((root / "solutions" / assignment / f"{assignment}.ipynb").read_text())
    for i in range(students):
        nb = json.loads(json.dumps(solution))
        if i % 3 == 2:  # every third one has a mistake
            for grade_id, old, new in MISTAKES.get(assignment, []):
                for cell in nb["cells"]:
                    if cell["metadata"].get("nbgrader", {}).get("grade_id") == grade_id:
                        cell["source"] = "".join(cell["source"]).replace(old, new)
        folder = root / "submitted" / f"student{i:03d}" / assignment
        folder.mkdir(parents=True)
        (folder / f"{assignment}.ipynb").write_text(json.dumps(nb))
    return root


def scores(course: Path, assignment: str) -> dict[str, float]:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {s.student.id: s.score for s in gb.assignment_submissions(assignment)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assignment", default="scaling")
    parser.add_argument("--students", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {args.students} submissions of {args.assignment!r}, jobs={args.jobs}")
    with tempfile.TemporaryDirectory() as tmp:
        plain = make_course(Path(tmp) / "plain", args.assignment, args.students)
        start = time.perf_counter()
        subprocess.run([NBGRADER, "autograde", args.assignment, "--force"], cwd=plain, env=env(),
                       check=True, capture_output=True)
        sequential = time.perf_counter() - start
        ours = make_course(Path(tmp) / "ours", args.assignment, args.students)
        start = time.perf_counter()
        results = classroom.grade(ours, args.assignment, jobs=args.jobs, progress=lambda line: None)
        parallel = time.perf_counter() - start
        a, b = scores(plain, args.assignment), scores(ours, args.assignment)
        assert all(r.status == "graded" for r in results), [r for r in results if r.status != "graded"]
        assert a == b and len(a) == args.students, f"the scores differ:\n{a}\n{b}"
        print(f"nbgrader autograde (sequential): {sequential:7.1f} s  ({sequential / args.students:.2f} s per submission)")
        print(f"coursekit.classroom.grade:       {parallel:7.1f} s  ({parallel / args.students:.2f} s per submission)")
        print(f"scores identical for all {args.students} submissions (mean {sum(a.values()) / len(a):.2f})")
        print(f"speedup={sequential / parallel:.2f} per_submission_s={parallel / args.students:.2f}")


if __name__ == "__main__":
    main()
