"""Preflight never stops the batch, and export accounts for every student.

Preflight: each malformed submission (old or unknown nbformat, JSON of the wrong shape,
too big, a symlink, an unsafe folder name) rejects that student only, with a reason that
names what was wrong; an nbformat 3 notebook is converted. Export: grades.csv safe for a
spreadsheet, every status counted, the report's autograded points apart from the points
graded by hand. No notebook is executed.
"""
from __future__ import annotations

import csv
import importlib
import json
import shutil
import warnings
from pathlib import Path

import nbformat
import pytest

from coursekit.classroom.export import export
from coursekit.classroom.preflight import Submission, preflight
from coursekit.classroom.status import write_status
from conftest import ROOT, released_course
from coursekit import course as registry

preflight_module = importlib.import_module("coursekit.classroom.preflight")   # the package exports the function

A = "scaling"
RELEASE = ROOT / "exercises" / A / f"{A}.ipynb"


# --------------------------------------------------------------------------- preflight

@pytest.fixture
def course(tmp_path) -> Path:
    (tmp_path / "exercises" / A).mkdir(parents=True)
    shutil.copy(RELEASE, tmp_path / "exercises" / A)
    return tmp_path


def submit(course: Path, student: str, content=None, *, text: str | None = None, name: str = f"{A}.ipynb") -> Path:
    """Write ``submitted/<student>/scaling/<name>``: ``content`` as JSON, or ``text``."""
    folder = course / "submitted" / student / A
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text if text is not None else json.dumps(content))
    return path


def release() -> dict:
    return json.loads(RELEASE.read_text())


def by_student(results: list[Submission]) -> dict[str, Submission]:
    return {s.student: s for s in results}


def test_a_good_submission_is_ok(course):
    nb = release()
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x" * 1000}]
    submit(course, "alice", nb)
    (alice,) = preflight(course, A)
    assert (alice.student, alice.status, alice.reason, alice.review) == ("alice", "ok", "", [])
    saved = json.loads((course / "submitted" / "alice" / A / f"{A}.ipynb").read_text())
    assert saved["cells"][1]["outputs"] == []          # outputs are dropped


@pytest.mark.parametrize("version", [3, 2])
def test_an_old_nbformat_is_converted(course, version):
    old = nbformat.convert(nbformat.reads(RELEASE.read_text(), as_version=4), version)
    path = submit(course, "alice", text=nbformat.writes(old, version=version))
    (alice,) = preflight(course, A)
    assert alice.status == "ok", alice.reason
    assert f"{A}.ipynb: converted from nbformat {version}" in alice.repairs
    saved = json.loads(path.read_text())
    assert saved["nbformat"] == 4
    nbformat.validate(nbformat.from_dict(saved))
    grade_ids = [c["metadata"].get("nbgrader", {}).get("grade_id") for c in saved["cells"]]
    assert grade_ids == [c["metadata"].get("nbgrader", {}).get("grade_id") for c in release()["cells"]]


def malformed() -> dict[str, tuple[object, str]]:
    """``{student: (notebook JSON, what the reason must say)}``."""
    nb = release()
    cells_dict = {**nb, "cells": {"0": nb["cells"][0]}}
    cell_string = {**nb, "cells": ["print('hello')", *nb["cells"]]}
    cell_metadata = json.loads(json.dumps(nb))
    cell_metadata["cells"][3]["metadata"] = "nbgrader"
    nbgrader_string = json.loads(json.dumps(nb))
    nbgrader_string["cells"][3]["metadata"]["nbgrader"] = "grade"
    source_number = json.loads(json.dumps(nb))
    source_number["cells"][2]["source"] = 42
    source_mixed = json.loads(json.dumps(nb))
    source_mixed["cells"][2]["source"] = ["a line\n", None]
    return {
        "v5": ({**nb, "nbformat": 5}, f"{A}.ipynb has nbformat 5; a notebook must have nbformat 4"),
        "v3-broken": ({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": "oops"},
                      "the nbformat 3 notebook could not be converted to nbformat 4"),
        "no-version": ({"cells": []}, "has nbformat None"),
        "null": (None, f"{A}.ipynb: the notebook is null; a notebook must be a JSON object"),
        "list": ([nb], f"{A}.ipynb: the notebook is a list; a notebook must be a JSON object"),
        "cells-dict": (cells_dict, f"{A}.ipynb: 'cells' is an object (dict); a notebook's cells must be a list"),
        "no-cells": ({k: v for k, v in nb.items() if k != "cells"}, "the notebook has no 'cells'"),
        "cell-string": (cell_string, f"{A}.ipynb: cell 0 is a string; each cell must be an object"),
        "nb-metadata": ({**nb, "metadata": "kernel"}, "the notebook's 'metadata' is a string; it must be an object"),
        "cell-metadata": (cell_metadata, "the 'metadata' of cell 3 is a string; it must be an object"),
        "nbgrader-string": (nbgrader_string, "the nbgrader metadata of cell 3 is a string; it must be an object"),
        "source-number": (source_number, "the 'source' of cell 2 is a number; it must be a string or a list of strings"),
        "source-mixed": (source_mixed, "cell 2 is a list with items that are not strings"),
    }


def test_malformed_notebooks_reject_only_their_student(course):
    cases = malformed()
    for student, (content, _) in cases.items():
        submit(course, student, content)
    submit(course, "not-json", text='{"cells": [ this is not json')
    submit(course, "zz-good", release())
    results = by_student(preflight(course, A))
    assert set(results) == {*cases, "not-json", "zz-good"}
    for student, (_, reason) in cases.items():
        assert results[student].status == "rejected", student
        assert reason in results[student].reason, (student, results[student].reason)
    assert results["not-json"].status == "rejected" and "JSONDecodeError" in results["not-json"].reason
    assert results["zz-good"].status == "ok" and results["zz-good"].reason == ""


def test_a_notebook_over_50_mb_is_rejected_unread(course):
    path = submit(course, "big", text="")
    with open(path, "r+b") as f:
        f.truncate(51_000_000)                          # sparse: no 51 MB written
    submit(course, "good", release())
    results = by_student(preflight(course, A))
    assert results["big"].status == "rejected"
    assert results["big"].reason == f"{A}.ipynb is 51.0 MB; the limit is 50 MB"
    assert results["good"].status == "ok"


def test_symlinks_are_never_followed(course, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    target = outside / f"{A}.ipynb"
    target.write_text(json.dumps(release()))
    before = target.read_text()
    folder = course / "submitted" / "linked-notebook" / A
    folder.mkdir(parents=True)
    (folder / f"{A}.ipynb").symlink_to(target)
    renamed = course / "submitted" / "linked-other" / A
    renamed.mkdir(parents=True)
    (renamed / "mine.ipynb").symlink_to(target)
    (course / "submitted" / "linked-folder").mkdir()
    (course / "submitted" / "linked-folder" / A).symlink_to(outside, target_is_directory=True)
    (course / "submitted" / "linked-student").symlink_to(outside, target_is_directory=True)
    submit(course, "good", release())
    results = by_student(preflight(course, A))
    assert results["linked-notebook"].status == "rejected"
    assert results["linked-notebook"].reason.startswith(f"{A}.ipynb is a symlink")
    assert results["linked-other"].reason == f"{A}.ipynb is missing (found: mine.ipynb (a symlink, ignored))"
    assert results["linked-folder"].reason.startswith(f"linked-folder/{A} is a symlink")
    assert results["linked-student"].reason.startswith("linked-student is a symlink")
    assert results["good"].status == "ok"
    assert target.read_text() == before and (renamed / "mine.ipynb").is_symlink()


def test_unsafe_student_folder_names_are_rejected(course):
    submit(course, ".hidden", release())
    submit(course, "bad\x01name", release())
    submit(course, "good", release())
    results = by_student(preflight(course, A))
    assert "starts with '.'" in results[".hidden"].reason and results[".hidden"].status == "rejected"
    assert "contains control characters" in results["bad\x01name"].reason
    assert results["good"].status == "ok"


def test_an_unexpected_error_rejects_one_student(course, monkeypatch):
    real_scan = preflight_module.scan

    def scan(nb, rel):
        if nb["cells"][0]["source"] == "boom":
            raise RuntimeError("something nobody foresaw\nsecond line")
        return real_scan(nb, rel)

    monkeypatch.setattr(preflight_module, "scan", scan)
    nb = release()
    nb["cells"][0]["source"] = "boom"
    submit(course, "boom", nb)
    submit(course, "good", release())
    results = by_student(preflight(course, A))
    assert results["boom"].status == "rejected"
    assert results["boom"].reason == "RuntimeError: something nobody foresaw"
    assert results["good"].status == "ok"


def test_repairs_still_made(course):
    submit(course, "renamed", release(), name=f"{A} (1).ipynb")
    deleted = release()
    index = next(i for i, c in enumerate(deleted["cells"])
                 if c["metadata"].get("nbgrader", {}).get("grade_id") == "check_min_max_transform")
    copied = json.loads(json.dumps(deleted))
    copied["cells"].insert(index + 1, json.loads(json.dumps(copied["cells"][index])))
    del deleted["cells"][index]
    submit(course, "deleted", deleted)
    submit(course, "copied", copied)
    results = by_student(preflight(course, A))
    assert results["renamed"].repairs == [f"'{A} (1).ipynb' was renamed '{A}.ipynb'"]
    assert results["deleted"].repairs == [f"{A}.ipynb: the deleted cell 'check_min_max_transform' was put back"]
    assert any("'check_min_max_transform' (a copy)" in r for r in results["copied"].repairs)
    assert all(s.status == "ok" for s in results.values())


# --------------------------------------------------------------------------- export

AUTO_MAX, TOTAL_MAX = registry.assignment(A).autograded, registry.assignment(A).total
HAND = "answer"   # the free-text answer, graded by hand


@pytest.fixture(scope="module")
def gradebook_course(tmp_path_factory) -> Path:
    """A released course whose gradebook holds fabricated grades (no notebook runs)."""
    from nbgrader.api import Gradebook

    course = released_course(tmp_path_factory.mktemp("export"), A)
    failing = {"alice": set(), "=2+3": {"hidden_min_max"}, "bob": {"check_min_max_transform", "hidden_standard"},
               "dave": set()}   # dave: a stale grade, then his regrade failed
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # nbgrader's own SQLAlchemy autoflush warnings in add_submission
        for student in [*failing, "frank"]:
            gb.add_student(student)
        for student, failed in failing.items():
            submission = gb.add_submission(A, student)
            for nb in submission.notebooks:
                for grade in nb.grades:
                    if grade.name == HAND:   # unanswered: nbgrader gives it 0 automatically
                        grade.auto_score, grade.needs_manual_grade = 0.0, student != "alice"
                    else:
                        grade.auto_score = 0.0 if grade.name in failed else grade.max_score
                        grade.needs_manual_grade = False
        gb.db.commit()
    write_status(course, A, [
        Submission("alice", "graded", repairs=["=HYPERLINK(\"x\") renamed"]),
        Submission("=2+3", "graded"), Submission("bob", "graded"),
        Submission("carol", "rejected", "scaling.ipynb: 'cells' is an object (dict); ..."),
        Submission("dave", "failed", "the kernel died"),
        Submission("erin", "flagged", "the integrity check reported: changed builtins.round"),
    ])
    export(course)
    return course


@pytest.mark.slow
def test_grades_csv_lists_everyone_and_is_spreadsheet_safe(gradebook_course):
    with open(gradebook_course / "grades.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["assignment", "student_id", "score", "max_score", "status", "notes"]
    assert all(cell[:1] not in ("=", "+", "-", "@") for row in table for cell in row)
    rows = {row[1]: dict(zip(table[0], row)) for row in table[1:]}
    assert set(rows) == {"alice", "'=2+3", "bob", "carol", "dave", "erin", "frank"}
    assert {k: r["status"] for k, r in rows.items()} == {
        "alice": "graded", "'=2+3": "graded", "bob": "graded", "carol": "rejected", "dave": "failed",
        "erin": "flagged", "frank": "not submitted"}
    assert float(rows["alice"]["score"]) == AUTO_MAX and float(rows["alice"]["max_score"]) == TOTAL_MAX
    assert float(rows["bob"]["score"]) == AUTO_MAX - 6
    assert rows["dave"]["score"] == "" and rows["dave"]["notes"] == "the kernel died"   # no stale grade
    assert rows["carol"]["score"] == rows["erin"]["score"] == rows["frank"]["score"] == ""
    assert rows["alice"]["notes"].startswith("'=HYPERLINK")
    assert "hand grading pending" in rows["bob"]["notes"]


@pytest.mark.slow
def test_report_keeps_hand_graded_points_apart(gradebook_course):
    report = (gradebook_course / "reports" / A / "report.md").read_text()
    mean = (AUTO_MAX + (AUTO_MAX - 2) + (AUTO_MAX - 6)) / 3
    assert f"autograded: mean {mean:.1f} of {AUTO_MAX:g}" in report
    assert "graded by hand: 5 points, not included above: `answer` (free text, 5 points)" in report
    table = [line for line in report.splitlines() if line.startswith("| ") and "/" in line]
    assert len(table) == 8 and not any(f"| {HAND} |" in line for line in table)
    assert "| check_min_max_transform | 4 | 2/3 | 67 % |" in report
    assert "| hidden_min_max | 2 | 2/3 | 67 % |" in report
    for state, count in [("graded", 3), ("rejected", 1), ("failed", 1), ("flagged", 1), ("not submitted", 1)]:
        assert f"| {state} | {count} |" in report
    png = gradebook_course / "reports" / A / "report.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
