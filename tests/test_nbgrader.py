"""The nbgrader pipeline, end to end, in a temporary copy of the course.

generate_assignment (solutions/ -> a release identical to exercises/), then autograde a
class of crafted submissions and export the grades, exactly as an instructor would.
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, tool_env

pytestmark = pytest.mark.slow

ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())


def nbgrader(course: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(["nbgrader", *args], cwd=course, env=tool_env(), capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"nbgrader {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A fresh course directory with the assignments generated (and the gradebook created)."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    for assignment in ASSIGNMENTS:
        nbgrader(course, "generate_assignment", assignment, "--force")
    return course


def normalized(path: Path) -> dict:
    """A notebook's JSON without the fields nbgrader or Jupyter fill in differently each time."""
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb["cells"]:
        cell["source"] = "".join(cell["source"])
    return nb


def test_assignments_exist():
    assert "scaling" in ASSIGNMENTS


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_exercises_are_generated_from_solutions(course, assignment):
    released = sorted(p.relative_to(course / "exercises") for p in (course / "exercises" / assignment).rglob("*")
                      if p.is_file())
    committed = sorted(p.relative_to(ROOT / "exercises") for p in (ROOT / "exercises" / assignment).rglob("*")
                       if p.is_file())
    assert released == committed, "exercises/ lists other files than nbgrader makes: run `make release`"
    for rel in released:
        if rel.suffix == ".ipynb":
            assert normalized(course / "exercises" / rel) == normalized(ROOT / "exercises" / rel), (
                f"exercises/{rel} is not what nbgrader generates from solutions/: run `make release`")
        else:
            assert (course / "exercises" / rel).read_bytes() == (ROOT / "exercises" / rel).read_bytes()


@pytest.mark.parametrize("folder", ["solutions", "exercises"])
def test_notebooks_are_committed_without_outputs(folder):
    for path in (ROOT / folder).rglob("*.ipynb"):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, f"{path} has outputs"


def test_release_holds_no_solution_or_hidden_test():
    for path in (ROOT / "exercises").rglob("*.ipynb"):
        text = path.read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "BEGIN MARK SCHEME"):
            assert marker not in text, f"{path} contains {marker!r}"


# --- autograding a class of scaling submissions ------------------------------------------------

def edited(source_nb: dict, edits: list[tuple[str, str, str]]) -> dict:
    """The notebook with text replaced in the cells named by grade_id."""
    nb = json.loads(json.dumps(source_nb))
    for grade_id, old, new in edits:
        (cell,) = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id]
        source = "".join(cell["source"])
        assert old in source, f"{grade_id} no longer contains {old!r}: update this test"
        cell["source"] = source.replace(old, new)
    return nb


MINMAX_RETURN = "return (X - self.data_min) / self.data_range * (high - low) + low"
STD_RETURN = "return (X - self.mean) / self.scale"

SUBMISSIONS = {
    # student: (edits of the solution notebook, grade cells expected to score 0)
    "correct": ([], set()),
    "refit_in_transform": ([
        ("min_max_scaler", MINMAX_RETURN,
         "lo, hi = X.amin(dim=0), X.amax(dim=0)\n        return (X - lo) / (hi - lo) * (high - low) + low"),
        ("standard_scaler", STD_RETURN, "return (X - X.mean(dim=0)) / X.std(dim=0, correction=0)"),
    # (refitting on a constant column also divides by zero: the edge-case checks catch it too)
    ], {"check_min_max_transform", "hidden_min_max", "check_standard_transform", "hidden_standard",
        "check_min_max_edge_cases", "check_standard_edge_cases"}),
    "nan_on_constant_feature": ([
        ("min_max_scaler", "torch.where(data_range == 0, torch.ones_like(data_range), data_range)", "data_range"),
        ("standard_scaler", "torch.where(std == 0, torch.ones_like(std), std)", "std"),
    ], {"check_min_max_edge_cases", "hidden_min_max", "check_standard_edge_cases", "hidden_standard"}),
    "unbiased_std": ([
        ("standard_scaler", "X.std(dim=0, correction=0)", "X.std(dim=0)"),
    ], {"check_standard_transform", "check_standard_inverse", "check_standard_edge_cases", "hidden_standard"}),
    "broken_inverse": ([
        ("min_max_scaler", "return (X - low) / (high - low) * self.data_range + self.data_min",
         "return X * self.data_range + self.data_min"),
        ("standard_scaler", "return X * self.scale + self.mean", "return X * self.scale"),
    ], {"check_min_max_inverse", "hidden_min_max", "check_standard_inverse", "hidden_standard"}),
    "correct_but_noisy": ([
        ("min_max_scaler", MINMAX_RETURN,
         "import sys, warnings\n        warnings.warn('a UserWarning from the student', UserWarning)\n"
         "        print('debug output on stderr', file=sys.stderr)\n        " + MINMAX_RETURN),
    ], set()),
}


@pytest.fixture(scope="module")
def graded(course):
    source = json.loads((course / "solutions" / "scaling" / "scaling.ipynb").read_text())
    for student, (edits, _) in SUBMISSIONS.items():
        folder = course / "submitted" / student / "scaling"
        folder.mkdir(parents=True)
        (folder / "scaling.ipynb").write_text(json.dumps(edited(source, edits)))
    folder = course / "submitted" / "unchanged_release" / "scaling"
    folder.mkdir(parents=True)
    shutil.copy(course / "exercises" / "scaling" / "scaling.ipynb", folder)

    nbgrader(course, "autograde", "scaling")
    nbgrader(course, "export")
    with open(course / "grades.csv") as f:
        totals = {row["student_id"]: row for row in csv.DictReader(f)}

    from nbgrader.api import Gradebook
    cells = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "normcourse") as gb:
        for student in totals:
            nb = gb.find_submission_notebook("scaling", "scaling", student)
            cells[student] = {g.name: (g.auto_score, g.max_score) for g in nb.grades}
    return totals, cells


def autograded_max(cells: dict) -> float:
    return sum(mx for name, (auto, mx) in cells.items() if name != "answer")


def test_solution_gets_every_autograded_point(graded):
    totals, cells = graded
    assert autograded_max(cells["correct"]) == 20
    for name, (auto, mx) in cells["correct"].items():
        if name == "answer":
            assert auto is None, "the free-text answer is graded by hand"
        else:
            assert auto == mx, f"the solution lost points in {name}"
    assert float(totals["correct"]["score"]) == 20.0
    assert float(totals["correct"]["max_score"]) == 25.0


def test_unchanged_release_scores_zero_without_breaking_the_batch(graded):
    totals, cells = graded
    assert float(totals["unchanged_release"]["score"]) == 0.0
    assert all(auto == 0 for auto, _ in cells["unchanged_release"].values())
    assert set(totals) == set(SUBMISSIONS) | {"unchanged_release"}, "every student is graded"


@pytest.mark.parametrize("student", [s for s in SUBMISSIONS if s != "correct"])
def test_each_submission_loses_exactly_the_points_of_its_mistake(graded, student):
    totals, cells = graded
    expected_zero = SUBMISSIONS[student][1]
    got_zero = {name for name, (auto, mx) in cells[student].items() if name != "answer" and auto == 0}
    partial = {name for name, (auto, mx) in cells[student].items() if name != "answer" and 0 < auto < mx}
    assert got_zero == expected_zero and not partial
    lost = sum(cells[student][name][1] for name in expected_zero)
    assert float(totals[student]["score"]) == 20.0 - lost
