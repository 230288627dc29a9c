"""The course's registry (coursekit.course) against everything that repeats it: the table of
contents, the solution and student notebooks (their points three ways: nbgrader's metadata,
the checks' ``points=`` and the notebook's own table), the generated tables, the modules."""
from __future__ import annotations

import ast
import importlib
import json
import re
import sys

import pytest
import yaml

from conftest import ROOT, is_notebook
from coursekit import course
from coursekit.course import ASSIGNMENTS, CHAPTERS

sys.path.insert(0, str(ROOT / "tools"))
import course_tables  # noqa: E402


def notebook(path) -> dict:
    return json.loads((ROOT / path).read_text())


def nbgrader_cells(nb: dict, *, kind: str) -> list[tuple[str, str, float | None]]:
    """``(grade_id, source, points)`` of the test cells (``kind="test"``), the answer cells
    (``"answer"``) or the hand-graded cells (``"manual"``) of a notebook, in order."""
    out = []
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        source = "".join(cell["source"])
        if kind == "test" and cell["cell_type"] == "code" and meta.get("grade") and not meta.get("solution"):
            out.append((meta["grade_id"], source, meta["points"]))
        elif kind == "answer" and cell["cell_type"] == "code" and meta.get("solution"):
            out.append((meta["grade_id"], source, None))
        elif kind == "manual" and meta.get("grade") and meta.get("solution"):
            out.append((meta["grade_id"], source, meta["points"]))
    return out


def points_arguments(source: str) -> float:
    """The sum of every ``points=<number>`` keyword in a test cell's calls."""
    total = 0.0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "points":
                    if not isinstance(kw.value, ast.Constant):
                        pytest.fail(f"points= must be a number in the cell, got {ast.unparse(kw.value)}")
                    total += kw.value.value
    return total


def table_points(nb: dict) -> tuple[float, float]:
    """(autograded, by hand) totals of the points column of the table in the first cell."""
    intro = "".join(nb["cells"][0]["source"])
    auto = manual = 0.0
    rows = [line for line in intro.splitlines() if line.startswith("|")]
    assert rows and rows[0].replace(" ", "").endswith("|points|"), (
        "the notebook's first cell must have a table whose last column is 'points'")
    for row in rows[2:]:
        cell = row.strip().strip("|").split("|")[-1]
        numbers = sum(float(n) for n in re.findall(r"\d+(?:\.\d+)?", cell))
        if "autograded" in cell:
            auto += numbers
        elif "by hand" in cell:
            manual += numbers
        else:
            pytest.fail(f"a row of the points table says neither 'autograded' nor 'by hand': {row}")
    return auto, manual


# --- the book ---------------------------------------------------------------------------------

def test_the_table_of_contents_lists_the_registrys_chapters_in_order():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    (chapters,) = [part for part in toc["parts"] if part["caption"] == "Chapters"]
    assert [entry["file"] for entry in chapters["chapters"]] == [c.doc for c in CHAPTERS], (
        "_toc.yml's chapters differ from coursekit/course.py's CHAPTERS")


def test_every_chapter_notebook_is_registered():
    notebooks = {f"book/{p.stem}" for p in (ROOT / "book").glob("*.md") if is_notebook(f"book/{p.stem}")}
    assert notebooks == {c.doc for c in CHAPTERS}


def test_generated_tables_are_up_to_date():
    assert course_tables.stale() == [], "run tools/course_tables.py to rewrite the tables"


def test_a_table_without_its_markers_is_reported():
    with pytest.raises(ValueError, match=r"README\.md must hold the line .* found the first 0 time"):
        course_tables.rewritten("no markers here", course_tables.HTML, ["|a|"], "README.md")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.name)
def test_a_chapters_modules_exist_and_its_code_imports_them(chapter):
    text = (ROOT / f"{chapter.doc}.md").read_text()
    for module in chapter.modules:
        importlib.import_module(module)
        assert re.search(rf"\b{re.escape(module)}\b", text), f"{chapter.doc} never uses {module}"


# --- the assignments -------------------------------------------------------------------------

def test_the_solutions_and_exercises_folders_are_the_registrys_assignments():
    for folder in ("solutions", "exercises"):
        assert sorted(p.name for p in (ROOT / folder).iterdir() if p.is_dir()) == sorted(ASSIGNMENTS)


@pytest.mark.parametrize("assignment", list(ASSIGNMENTS.values()), ids=list(ASSIGNMENTS))
@pytest.mark.parametrize("path", ["source", "notebook"])
def test_each_test_cells_points_are_the_registrys(assignment, path):
    nb = notebook(getattr(assignment, path))
    tests = nbgrader_cells(nb, kind="test")
    assert {gid: points for gid, _, points in tests} == dict(assignment.tests), (
        f"{getattr(assignment, path)}: the test cells or their points differ from coursekit/course.py")
    assert [gid for gid, _, _ in tests] == list(assignment.tests), "the test cells are in another order"
    (manual,) = nbgrader_cells(nb, kind="manual")
    assert manual[2] == assignment.manual


@pytest.mark.parametrize("assignment", list(ASSIGNMENTS.values()), ids=list(ASSIGNMENTS))
def test_the_checks_are_called_with_the_cells_points(assignment):
    for grade_id, source, points in nbgrader_cells(notebook(assignment.source), kind="test"):
        assert points_arguments(source) == points, (
            f"{assignment.name}/{grade_id}: its checks' points= add up to {points_arguments(source)}, "
            f"but the cell is worth {points}")


@pytest.mark.parametrize("assignment", list(ASSIGNMENTS.values()), ids=list(ASSIGNMENTS))
def test_the_notebooks_own_table_gives_the_registrys_points(assignment):
    for path in (assignment.source, assignment.notebook):
        assert table_points(notebook(path)) == (assignment.autograded, assignment.manual), path


@pytest.mark.parametrize("assignment", list(ASSIGNMENTS.values()), ids=list(ASSIGNMENTS))
def test_the_graded_names_are_what_the_answer_cells_define(assignment):
    nb = notebook(assignment.source)
    defined = [node.name for _, source, _ in nbgrader_cells(nb, kind="answer")
               for node in ast.parse(source).body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert tuple(defined) == assignment.graded
    for grade_id, source, _ in nbgrader_cells(nb, kind="test"):
        assert any(re.search(rf"\b{re.escape(name)}\b", source) for name in assignment.graded), (
            f"{assignment.name}/{grade_id} checks none of {assignment.graded}")


@pytest.mark.parametrize("assignment", list(ASSIGNMENTS.values()), ids=list(ASSIGNMENTS))
def test_the_test_cells_use_the_registrys_grading_module(assignment):
    module = importlib.import_module(assignment.grading)
    importlib.import_module(assignment.reference)
    for grade_id, source, _ in nbgrader_cells(notebook(assignment.source), kind="test"):
        imported = {node.module for node in ast.walk(ast.parse(source))
                    if isinstance(node, ast.ImportFrom) and node.module.startswith("coursekit")}
        assert imported == {assignment.grading}, f"{assignment.name}/{grade_id} imports {imported}"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{assignment.grading} has no {alias.name}"


def test_points_are_totals_of_the_test_cells():
    for a in ASSIGNMENTS.values():
        assert a.autograded == sum(a.tests.values()) and a.total == a.autograded + a.manual
    assert course.chapter("book/regularization").assignment is ASSIGNMENTS["dropout"]
    assert course.chapter("regularization") is course.chapter("book/regularization")


def test_an_unknown_name_lists_what_exists():
    with pytest.raises(KeyError, match=r"no chapter 'book/nope'; the chapters are \['scaling'"):
        course.chapter("book/nope")
    with pytest.raises(KeyError, match=r"no assignment 'drop'; the assignments are \['scaling'"):
        course.assignment("drop")


def test_the_parallel_execution_runs_exactly_the_registry_s_chapters():
    """tools/execute_chapters.py (`make book`'s first step) finds the pages to execute as
    myst-nb does; they are the registry's chapters, in its order, and nothing else."""
    sys.path.insert(0, str(ROOT / "tools"))
    import execute_chapters
    assert [str(p.relative_to(ROOT).with_suffix("")) for p in execute_chapters.chapters()] == \
        [c.doc for c in course.CHAPTERS]
    assert execute_chapters.execution_timeout() == yaml.safe_load((ROOT / "_config.yml").read_text())[
        "execute"]["timeout"]
