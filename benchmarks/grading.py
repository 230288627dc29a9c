"""Throughput of grading a class: plain sequential `nbgrader autograde` against
`coursekit.classroom.grade` (preflight, then the students sharded over worker processes,
each kernel in its bubblewrap sandbox), and what the sandbox costs.

Usage: .venv/bin/python benchmarks/grading.py [--assignment scaling] [--students 16] [--jobs N]

All grade the same synthetic class (correct submissions and submissions with classic
mistakes) in fresh copies of the course; the scores must be identical. The sandbox's cost
per student is measured twice: the whole class graded with and without the sandbox, and
one kernel started, `import torch, coursekit.grading` run and stopped, with and without
(median of 5 each). The trusted checker (part of `classroom.grade`) is also timed alone:
one submission scored by it, worker start included (median of 5). The last line is
`speedup=<sequential / sandboxed parallel> per_submission_s=<sandboxed wall time / students>
sandbox_s=<kernel cost, sandboxed - plain> checker_s=<trusted checker, per submission>`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hardware import hardware  # noqa: E402  (benchmarks/hardware.py)
from coursekit import classroom  # noqa: E402
from coursekit.classroom import checker, gradebook, sandbox  # noqa: E402

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


def kernel_seconds(sandboxed: bool, folder: Path, runs: int = 5) -> float:
    """Median seconds to start a kernel, run `import torch, coursekit.grading` and stop it."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import torch, coursekit.grading")])
    kernel = "python3"
    if sandboxed:
        spec = sandbox.write_kernelspec(folder / "jupyter", sandbox.Limits())
        os.environ["JUPYTER_PATH"] = str(spec)
        kernel = sandbox.KERNEL_NAME
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        NotebookClient(nb, kernel_name=kernel, timeout=120).execute()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def checker_seconds(course: Path, assignment: str, runs: int = 5) -> float:
    """Median seconds for the trusted checker to score one submission (sandboxed worker)."""
    release = json.loads((course / "exercises" / assignment / f"{assignment}.ipynb").read_text())
    spec = checker.Assignment.from_release(assignment, release,
                                           gradebook.test_cells(course / "gradebook.db", assignment, assignment))
    nb = json.loads((course / "submitted" / "student000" / assignment / f"{assignment}.ipynb").read_text())
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = checker.check_notebook(spec, nb, bwrap=sandbox.require())
        times.append(time.perf_counter() - start)
        assert result.total == sum(points for *_, points in spec.tests), result.messages
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assignment", default="scaling")
    parser.add_argument("--students", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    args = parser.parse_args()
    import torch
    print(f"# {hardware(torch.device('cpu'))}; {args.students} submissions of {args.assignment!r}, jobs={args.jobs}")
    with tempfile.TemporaryDirectory() as tmp:
        plain = make_course(Path(tmp) / "plain", args.assignment, args.students)
        start = time.perf_counter()
        subprocess.run([NBGRADER, "autograde", args.assignment, "--force"], cwd=plain, env=env(),
                       check=True, capture_output=True)
        sequential = time.perf_counter() - start
        walls = {}
        for sandboxed in (False, True):
            ours = make_course(Path(tmp) / f"ours-{sandboxed}", args.assignment, args.students)
            start = time.perf_counter()
            results = classroom.grade(ours, args.assignment, jobs=args.jobs, progress=lambda line: None,
                                      sandboxed=sandboxed)
            walls[sandboxed] = time.perf_counter() - start
            a, b = scores(plain, args.assignment), scores(ours, args.assignment)
            assert all(r.status == "graded" for r in results), [r for r in results if r.status != "graded"]
            assert a == b and len(a) == args.students, f"the scores differ:\n{a}\n{b}"
        trusted = checker_seconds(ours, args.assignment)
        plain_kernel = kernel_seconds(False, Path(tmp))
        sandboxed_kernel = kernel_seconds(True, Path(tmp))
        n = args.students
        print(f"nbgrader autograde (sequential):       {sequential:7.1f} s  ({sequential / n:.2f} s per submission)")
        print(f"classroom.grade, no sandbox:           {walls[False]:7.1f} s  ({walls[False] / n:.2f} s per submission)")
        print(f"classroom.grade, sandboxed:            {walls[True]:7.1f} s  ({walls[True] / n:.2f} s per submission)")
        print(f"scores identical for all {n} submissions (mean {sum(a.values()) / len(a):.2f})")
        print(f"one kernel (start, import torch and coursekit.grading, stop): plain {plain_kernel:.2f} s, "
              f"sandboxed {sandboxed_kernel:.2f} s (median of 5)")
        print(f"trusted checker, one submission (worker start, its cells, every test cell): {trusted:.2f} s "
              f"(median of 5)")
        print(f"speedup={sequential / walls[True]:.2f} per_submission_s={walls[True] / n:.2f} "
              f"sandbox_s={sandboxed_kernel - plain_kernel:.2f} checker_s={trusted:.2f}")


if __name__ == "__main__":
    main()
