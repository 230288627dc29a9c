"""Collecting submissions never stops the batch and never drops a student: every input file
is collected, superseded, skipped or ignored with the reason, and nothing is written
outside ``submitted/``, ``downloaded/`` and ``reports/`` (the cases of a hostile-student audit)."""
from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path

import pytest

from coursekit.classroom.cli import main
from coursekit.classroom.collect import CollectReport, collect, student_id
from conftest import ROOT, tool_env

A = "scaling"
RELEASE = (ROOT / "exercises" / A / f"{A}.ipynb").read_text()


def notebook(tag: str) -> str:
    """The released notebook, marked so that a test can tell which attempt was kept."""
    nb = json.loads(RELEASE)
    nb["metadata"]["attempt"] = tag
    return json.dumps(nb)


def kept(course: Path, student: str) -> str:
    return json.loads((course / "submitted" / student / A / f"{A}.ipynb").read_text())["metadata"]["attempt"]


def make_zip(path: Path, members: list) -> Path:
    """A zip of ``(name, text)`` or ``(name, text, date_time)`` members, in this order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, text, *when in members:
            z.writestr(zipfile.ZipInfo(name, date_time=when[0] if when else (2026, 11, 1, 12, 0, 0)), text)
    return path


def write(path: Path, text: str, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def outcomes(report: CollectReport) -> dict[str, tuple[str, str | None, str]]:
    """``{source: (outcome, student, reason)}``."""
    return {e.source: (e.outcome, e.student, e.reason) for e in report.entries}


def listing(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.fixture
def course(tmp_path) -> Path:
    """A minimal course: the released scaling notebook only."""
    course = tmp_path / "course"
    write(course / "exercises" / A / f"{A}.ipynb", RELEASE)
    return course


@pytest.fixture
def inputs(tmp_path) -> Path:
    """Where a test puts what it collects (downloads, zips, the targets of symlinks)."""
    return tmp_path / "in"


@pytest.fixture(autouse=True)
def nothing_written_elsewhere(tmp_path, course):
    """Collect creates files only in submitted/, downloaded/ and reports/ of the course."""
    before = listing(tmp_path.parent)
    yield
    allowed = [course / "submitted", course / "downloaded", course / "reports", tmp_path / "in"]
    stray = [p for p in listing(tmp_path.parent) - before
             if not any(p == root or root in p.parents for root in allowed)]
    assert stray == []


def test_unsafe_members_are_skipped_and_the_rest_collected(course, inputs, tmp_path):
    archive = make_zip(inputs / "lms.zip", [
        ("../evil_1_scaling.ipynb", notebook("evil")),
        ("a/../../b_1_scaling.ipynb", notebook("evil")),
        (f"{tmp_path.parent}/pwned_1_scaling.ipynb", notebook("evil")),    # absolute
        ("C:\\Users\\carl_1_scaling.ipynb", notebook("evil")),
        ("..\\win_1_scaling.ipynb", notebook("evil")),
        ("alice_1_attempt_scaling.ipynb", notebook("alice")),
        ("alice_1_notes.txt", "not a notebook"),
    ])
    with zipfile.ZipFile(archive, "a") as z:                               # a symlink member
        link = zipfile.ZipInfo("mallory_1_scaling.ipynb")
        link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
    report = collect(course, A, archive)
    assert report.students == ["alice"] and kept(course, "alice") == "alice"
    found = outcomes(report)
    assert found["lms.zip:../evil_1_scaling.ipynb"][:2] == ("skipped", None)
    assert "'..'" in found["lms.zip:../evil_1_scaling.ipynb"][2]
    assert "'..'" in found["lms.zip:a/../../b_1_scaling.ipynb"][2]
    assert "absolute" in found[f"lms.zip:{tmp_path.parent}/pwned_1_scaling.ipynb"][2]
    assert "drive letter" in found["lms.zip:C:\\Users\\carl_1_scaling.ipynb"][2]
    assert found["lms.zip:..\\win_1_scaling.ipynb"][0] == "skipped"
    assert found["lms.zip:alice_1_notes.txt"][0] == "skipped" and "not a notebook" in found["lms.zip:alice_1_notes.txt"][2]
    assert found["lms.zip:mallory_1_scaling.ipynb"][0] == "ignored"
    assert "symbolic link" in found["lms.zip:mallory_1_scaling.ipynb"][2]
    assert sorted(p.name for p in (course / "submitted").iterdir()) == ["alice"]


def test_two_attempts_in_one_zip_keep_the_newest(course, inputs):
    """By the LMS timestamp in the name when there is one (not the order or the zip date),
    else by the zip member's date."""
    archive = make_zip(inputs / "lms.zip", [
        ("alice_LATE_123_2026-11-03-14-05-09_scaling.ipynb", notebook("new"), (2026, 1, 1, 0, 0, 0)),
        ("alice_123_2026-11-02-09-00-00_scaling.ipynb", notebook("old"), (2026, 12, 1, 0, 0, 0)),
        ("bob_7_attempt_scaling.ipynb", notebook("new"), (2026, 11, 5, 10, 0, 0)),
        ("bob_6_attempt_scaling.ipynb", notebook("old"), (2026, 11, 4, 10, 0, 0)),
    ])
    report = collect(course, A, archive)
    assert report.students == ["alice", "bob"]
    assert kept(course, "alice") == "new" and kept(course, "bob") == "new"
    found = outcomes(report)
    outcome, student, reason = found["lms.zip:alice_123_2026-11-02-09-00-00_scaling.ipynb"]
    assert (outcome, student) == ("superseded", "alice")
    assert "alice_LATE_123_2026-11-03-14-05-09_scaling.ipynb" in reason and "LMS timestamp" in reason
    assert found["lms.zip:bob_6_attempt_scaling.ipynb"][0] == "superseded"
    assert "zip date" in found["lms.zip:bob_6_attempt_scaling.ipynb"][2]
    assert "newest of 2 attempts" in found["lms.zip:alice_LATE_123_2026-11-03-14-05-09_scaling.ipynb"][2]


def test_a_late_zip_collected_on_top_keeps_the_newest(course, inputs):
    first = make_zip(inputs / "first" / "lms.zip", [
        ("alice_1_2026-11-03-14-05-09_scaling.ipynb", notebook("on time")),
        ("bob_2_2026-11-03-15-00-00_scaling.ipynb", notebook("on time")),
    ])
    late = make_zip(inputs / "late" / "lms.zip", [
        ("alice_LATE_3_2026-11-05-08-00-00_scaling.ipynb", notebook("late")),
        ("bob_LATE_4_2026-11-01-08-00-00_scaling.ipynb", notebook("older")),   # older than the one collected
        ("carol_LATE_5_2026-11-05-09-00-00_scaling.ipynb", notebook("late")),
    ])
    assert collect(course, A, first).students == ["alice", "bob"]
    for student in ("alice", "bob"):    # grading rewrites the files: their dates are now
        path = course / "submitted" / student / A / f"{A}.ipynb"
        path.write_text(path.read_text())
    report = collect(course, A, late)
    assert report.students == ["alice", "carol"]
    assert [kept(course, s) for s in ("alice", "bob", "carol")] == ["late", "on time", "late"]
    outcome, student, reason = outcomes(report)["lms.zip:bob_LATE_4_2026-11-01-08-00-00_scaling.ipynb"]
    assert (outcome, student) == ("superseded", "bob") and "collected earlier" in reason
    assert "replaces the one collected earlier" in outcomes(report)["lms.zip:alice_LATE_3_2026-11-05-08-00-00_scaling.ipynb"][2]
    collect(course, A, late)            # the same zip again: still fine, kept again
    archived = sorted(p.name for p in (course / "downloaded" / A / "archive").iterdir())
    assert archived == ["lms-1.zip", "lms-2.zip", "lms.zip"]


def test_renamed_notebooks_are_stored_under_the_release_name(course, inputs):
    downloads = inputs / "downloads"
    names = {"ann": "Scaling.ipynb", "ben": "scaling (1).ipynb", "cat": "scaling-1.ipynb",
             "dan": "scaling copy.ipynb", "eve": "scaling_1.ipynb", "fay": "SCALING - Copy (2).ipynb"}
    for student, name in names.items():
        write(downloads / student / name, notebook(name))
    write(downloads / "gus" / "homework.ipynb", notebook("gus"))
    report = collect(course, A, downloads)
    assert report.students == sorted(names)
    for student, name in names.items():
        assert os.listdir(course / "submitted" / student / A) == [f"{A}.ipynb"]
        assert kept(course, student) == name
        assert repr(name) in outcomes(report)[f"downloads/{student}/{name}"][2]
    outcome, student, reason = outcomes(report)["downloads/gus/homework.ipynb"]
    assert (outcome, student) == ("skipped", "gus") and "names no released notebook (scaling.ipynb)" in reason
    archive = make_zip(inputs / "canvas.zip", [("hal_99_1234_Scaling (2).ipynb", notebook("hal")),
                                               ("ida_99_1234_scaling-1.ipynb", notebook("ida"))])
    assert collect(course, A, archive).students == ["hal", "ida"]
    assert kept(course, "hal") == "hal" and kept(course, "ida") == "ida"


def test_a_reuploaded_folder_replaces_the_old_files(course, inputs):
    write(inputs / "monday" / "alice" / A / f"{A}.ipynb", notebook("first"), mtime=1_790_000_000)
    collect(course, A, inputs / "monday")
    write(course / "submitted" / "alice" / A / "stray.txt", "left over")
    write(inputs / "tuesday" / "alice" / f"{A} (1).ipynb", notebook("second"), mtime=1_790_100_000)
    report = collect(course, A, inputs / "tuesday")
    assert report.students == ["alice"]
    assert os.listdir(course / "submitted" / "alice" / A) == [f"{A}.ipynb"]
    assert kept(course, "alice") == "second"


def test_unsafe_student_ids_are_rejected_with_the_reason(course, inputs):
    archive = make_zip(inputs / "lms.zip", [
        (".._1_scaling.ipynb", notebook("dotdot")),
        (".hidden_1_scaling.ipynb", notebook("hidden")),
        ("bell\x07_1_scaling.ipynb", notebook("control")),
        ("x" * 101 + "_1_scaling.ipynb", notebook("long")),
        ("alice_1_scaling.ipynb", notebook("alice")),
    ])
    report = collect(course, A, archive)
    assert report.students == ["alice"]
    found = outcomes(report)
    outcome, student, reason = found["lms.zip:.._1_scaling.ipynb"]
    assert (outcome, student) == ("skipped", None) and "student id '..'" in reason
    assert "starts with '.'" in found["lms.zip:.hidden_1_scaling.ipynb"][2]
    assert "control character" in found["lms.zip:bell\x07_1_scaling.ipynb"][2]
    assert "101 characters" in found["lms.zip:" + "x" * 101 + "_1_scaling.ipynb"][2]
    assert sorted(os.listdir(course / "submitted")) == ["alice"]
    assert sorted(os.listdir(course)) == ["downloaded", "exercises", "reports", "submitted"]


@pytest.mark.parametrize("raw, problem", [("..", "parent folder"), (".", "current"), ("a/b", "contains '/'"),
                                          ("a\\b", "contains '\\\\'"), ("", "is empty"), ("  ", "is empty"),
                                          ("a\0b", "control character"), (".x", "starts with '.'"),
                                          ("y" * 101, "101 characters")])
def test_student_id_names_what_is_not_allowed(raw, problem):
    with pytest.raises(ValueError, match="student id") as error:
        student_id(raw)
    assert problem in str(error.value) and "must be usable as a folder name" in str(error.value)


def test_nfc_and_nfd_spellings_are_one_student(course, inputs):
    nfc, nfd = unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")
    assert nfc != nfd
    write(inputs / "downloads" / nfc / f"{A}.ipynb", notebook("nfc"), mtime=1_790_000_000)
    write(inputs / "downloads" / nfd / f"{A}.ipynb", notebook("nfd"), mtime=1_790_100_000)
    report = collect(course, A, inputs / "downloads")
    assert report.students == [nfc] and os.listdir(course / "submitted") == [nfc]
    assert kept(course, nfc) == "nfd"
    assert sorted(e.outcome for e in report.entries) == ["collected", "superseded"]
    assert student_id(f" {nfd} ") == nfc


def test_a_formula_like_id_is_kept_and_safe_in_the_csv(course, inputs):
    report = collect(course, A, make_zip(inputs / "lms.zip", [("=2+3_1_scaling.ipynb", notebook("formula"))]))
    assert report.students == ["=2+3"] and kept(course, "=2+3") == "formula"
    rows = list(csv.DictReader(open(course / "reports" / A / "collect.csv")))
    assert [r["student"] for r in rows] == ["'=2+3"]


def test_litter_and_symlinks_are_ignored(course, inputs):
    downloads = inputs / "downloads"
    write(downloads / "alice" / f"{A}.ipynb", notebook("alice"))
    write(downloads / "alice" / ".ipynb_checkpoints" / f"{A}-checkpoint.ipynb", notebook("checkpoint"))
    write(downloads / "alice" / f"._{A}.ipynb", "AppleDouble")
    write(downloads / "__MACOSX" / "alice" / f"._{A}.ipynb", "AppleDouble")
    secret = write(inputs / "elsewhere" / "bob" / f"{A}.ipynb", notebook("not bob's"))
    (downloads / "bob").mkdir()
    (downloads / "bob" / f"{A}.ipynb").symlink_to(secret)
    (downloads / "carol").symlink_to(secret.parent, target_is_directory=True)
    report = collect(course, A, downloads)
    assert report.students == ["alice"] and kept(course, "alice") == "alice"
    assert sorted(os.listdir(course / "submitted")) == ["alice"]
    found = outcomes(report)
    assert {s: o[0] for s, o in found.items()} == {
        "downloads/alice/scaling.ipynb": "collected",
        "downloads/alice/.ipynb_checkpoints/scaling-checkpoint.ipynb": "ignored",
        "downloads/alice/._scaling.ipynb": "ignored",
        "downloads/__MACOSX/alice/._scaling.ipynb": "ignored",
        "downloads/bob/scaling.ipynb": "ignored",
        "downloads/carol": "ignored",
    }
    assert "symbolic link" in found["downloads/carol"][2]
    archive = make_zip(inputs / "mac.zip", [("__MACOSX/._dan_1_scaling.ipynb", "x"),
                                            ("dan/.ipynb_checkpoints/scaling-checkpoint.ipynb", "{}"),
                                            ("dan_1_scaling.ipynb", notebook("dan"))])
    report = collect(course, A, archive)
    assert report.students == ["dan"] and sorted(e.outcome for e in report.entries) == ["collected", "ignored", "ignored"]


def test_an_unreadable_member_is_skipped_and_an_older_attempt_taken(course, inputs):
    archive = make_zip(inputs / "lms.zip", [("alice_1_2026-11-03-10-00-00_scaling.ipynb", notebook("CORRUPTME")),
                                            ("alice_1_2026-11-02-10-00-00_scaling.ipynb", notebook("older")),
                                            ("bob_1_scaling.ipynb", notebook("bob"))])
    archive.write_bytes(archive.read_bytes().replace(b"CORRUPTME", b"CORRUPTED"))   # its CRC no longer matches
    report = collect(course, A, archive)
    assert report.students == ["alice", "bob"] and kept(course, "alice") == "older"
    outcome, _, reason = outcomes(report)["lms.zip:alice_1_2026-11-03-10-00-00_scaling.ipynb"]
    assert outcome == "skipped" and "could not be read" in reason


def test_a_corrupt_zip_or_another_file_is_a_value_error(course, inputs):
    broken = inputs / "broken.zip"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ValueError, match="broken.zip"):
        collect(course, A, broken)
    truncated = make_zip(inputs / "truncated.zip", [("alice_1_scaling.ipynb", notebook("alice"))])
    truncated.write_bytes(truncated.read_bytes()[:-30])
    with pytest.raises(ValueError, match="truncated.zip"):
        collect(course, A, truncated)
    text = write(inputs / "notes.txt", "hello")
    with pytest.raises(ValueError, match="notes.txt is neither a folder nor a zip file"):
        collect(course, A, text)


def test_a_missing_source_is_file_not_found(course, inputs):
    with pytest.raises(FileNotFoundError, match="nothing.zip does not exist"):
        collect(course, A, inputs / "nothing.zip")


def test_collect_csv_lists_every_input_file(course, inputs):
    members = ["alice_1_2026-11-03-10-00-00_scaling.ipynb", "alice_1_2026-11-02-10-00-00_scaling.ipynb",
               "../escape_1_scaling.ipynb", "__MACOSX/._bob_1_scaling.ipynb", "bob_1_Scaling (1).ipynb",
               "bob_1_readme.md", "carol_1_lab.ipynb", ".._1_scaling.ipynb"]
    archive = make_zip(inputs / "lms.zip", [(m, notebook(m)) for m in members])
    report = collect(course, A, archive)
    rows = list(csv.DictReader(open(course / "reports" / A / "collect.csv")))
    assert sorted(r["source"] for r in rows) == sorted(f"lms.zip:{m}" for m in members)
    assert [(r["source"], r["outcome"], r["reason"]) for r in rows] == \
           [(e.source, e.outcome, e.reason) for e in report.entries]
    assert all(r["reason"] for r in rows)
    assert sorted(r["outcome"] for r in rows) == ["collected", "collected", "ignored", "skipped", "skipped",
                                                  "skipped", "skipped", "superseded"]


def test_progress_prints_a_short_summary(course, inputs):
    archive = make_zip(inputs / "lms.zip", [("alice_1_2026-11-03-10-00-00_scaling.ipynb", notebook("a")),
                                            ("alice_1_2026-11-02-10-00-00_scaling.ipynb", notebook("b")),
                                            ("bob_1_scaling.ipynb", notebook("c")),
                                            ("../x_1_scaling.ipynb", notebook("d")),
                                            ("__MACOSX/._bob_1_scaling.ipynb", "x")])
    lines = []
    collect(course, A, archive, progress=lines.append)
    assert lines[0] == "collected 2 students (2 files): 1 superseded, 1 skipped, 1 ignored"
    assert lines[1].startswith("  skipped: lms.zip:../x_1_scaling.ipynb: ")
    assert lines[2].startswith("  superseded: lms.zip:alice_1_2026-11-02-10-00-00_scaling.ipynb: older than")
    assert len(lines) == 4 and lines[3].endswith("collect.csv")


@pytest.mark.slow   # a subprocess of the command line
def test_the_command_line_collects_and_prints_the_summary(course, inputs, capsys):
    archive = make_zip(inputs / "lms.zip", [("alice_1_scaling.ipynb", notebook("alice")),
                                            ("../x_1_scaling.ipynb", notebook("x"))])
    command = [sys.executable, "-m", "coursekit.classroom", "--course", str(course), "collect", A]
    result = subprocess.run(command + [str(archive)], capture_output=True, text=True, env=tool_env(), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("collected 1 student (1 file): 0 superseded, 1 skipped, 0 ignored\n")
    assert "skipped: lms.zip:../x_1_scaling.ipynb" in result.stdout and "INFO" not in result.stdout + result.stderr
    assert kept(course, "alice") == "alice"
    assert main(command[3:] + [str(inputs / "nothing")]) == 2
    assert "nothing does not exist" in capsys.readouterr().err
