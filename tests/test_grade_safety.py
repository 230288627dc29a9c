"""Grading survives its own interruption and a lost gradebook: SIGTERM keeps the students
graded so far and accounts for the others, leaves no temporary folder or process behind,
and the next run works; the gradebook is backed up before each run, and a missing or
corrupt one is reported with the way back; a bad $OMP_NUM_THREADS stops grading before
anything changes."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from coursekit import classroom
from coursekit.classroom import gradebook, sandbox
from coursekit.classroom.grade import _Lock
from conftest import released_course, tool_env

pytestmark = pytest.mark.slow
A = "scaling"


@pytest.fixture
def course(tmp_path) -> Path:
    return released_course(tmp_path / "course", A)


def submit(course: Path, student: str, prefix: str = "") -> None:
    nb = json.loads((course / "solutions" / A / f"{A}.ipynb").read_text())
    if prefix:
        cell = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "min_max_scaler")
        cell["source"] = prefix + "".join(cell["source"])
    folder = course / "submitted" / student / A
    folder.mkdir(parents=True)
    (folder / f"{A}.ipynb").write_text(json.dumps(nb))


def scores(course: Path) -> dict[str, float]:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {s.student.id: s.score for s in gb.assignment_submissions(A)}


def status(course: Path) -> dict[str, dict]:
    with open(course / "reports" / A / "status.csv", newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


@pytest.fixture
def private_run(tmp_path):
    """A temporary folder and, as root, a pids and a memory cgroup inside this process's own,
    for one grading subprocess to run in: the kernels' and workers' folders and cgroups it
    makes go inside them, apart from those of any other test running at the same time. (The
    folder is short: a kernel's socket path has at most 107 bytes.)"""
    tmp = Path(tempfile.mkdtemp(prefix="gs-", dir="/tmp"))
    groups = []
    for controller in ("pids", "memory"):
        own = sandbox._own_cgroup(controller) if os.geteuid() == 0 else None
        if own is not None:
            group = own / f"test-grade-safety-{tmp_path.name}"
            try:
                group.mkdir()
                groups.append(group)
            except OSError:
                pass
    yield tmp, groups
    for group in groups:
        sandbox.remove_cgroup(group, seconds=5)
    shutil.rmtree(tmp, ignore_errors=True)


def left_behind(tmp: Path, groups: list[Path]) -> set[str]:
    """The kernels' socket folders, the trusted checker's workers' folders, and the cgroups
    made for them (as root) that a grading run in ``private_run`` left."""
    found = {p.name for pattern in ("coursekit-kernels-*", "coursekit-worker-*") for p in tmp.glob(pattern)}
    return found | {str(p) for group in groups for p in group.iterdir() if p.is_dir()}


def test_sigterm_keeps_finished_students_and_accounts_for_the_rest(course, private_run):
    for student in ("a1", "a2"):
        submit(course, student)
    submit(course, "b_sleeper", "import time\ntime.sleep(300)\n")
    submit(course, "c1")
    tmp, groups = private_run
    grading = subprocess.Popen([*sandbox.enter_cgroups(groups), sys.executable, "-m", "coursekit.classroom",
                                "--course", str(course), "grade", A, "--jobs", "1"],
                               env={**tool_env(), "TMPDIR": str(tmp)}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    # students are graded in order: wait until a1 and a2 are done (nbgrader makes a finished
    # notebook read-only, and the trusted checker has written their scores) and the sleeper runs
    deadline = time.monotonic() + 240

    def a2_done():
        found = list((course / "reports" / ".work").glob(f"grade-*/shard0/autograded/a2/{A}/{A}.ipynb"))
        trusted = list((course / "reports" / ".work").glob("grade-*/shard0/trusted.json"))
        try:
            checked = trusted and "a2" in json.loads(trusted[0].read_text())
        except (OSError, ValueError):
            checked = False
        return found and not found[0].stat().st_mode & 0o222 and checked
    while not a2_done():
        assert grading.poll() is None and time.monotonic() < deadline, grading.communicate()[0]
        time.sleep(0.2)
    time.sleep(3)
    grading.send_signal(signal.SIGTERM)
    output, _ = grading.communicate(timeout=60)
    assert grading.returncode == 128 + signal.SIGTERM, output
    assert "interrupted (SIGTERM)" in output

    rows = status(course)
    assert {s: rows[s]["status"] for s in rows} == {"a1": "graded", "a2": "graded",
                                                     "b_sleeper": "failed", "c1": "failed"}
    assert "grading was interrupted (SIGTERM)" in rows["b_sleeper"]["reason"]
    assert "grading was interrupted (SIGTERM)" in rows["c1"]["reason"]
    assert scores(course) == {"a1": 20.0, "a2": 20.0}          # complete students only
    assert not list((course / "reports" / ".work").glob("grade-*"))   # no temporary folder left
    assert left_behind(tmp, groups) == set()   # no socket or worker folder, no cgroup left behind
    with sqlite3.connect(course / "gradebook.db") as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    alive = subprocess.run(["pgrep", "-f", f"{course}/reports/.work"], capture_output=True, text=True)
    assert alive.stdout == "", "a process of the interrupted run is still alive"

    # the next run works, and grades the students the interrupted one did not reach
    (course / "submitted" / "b_sleeper" / A / f"{A}.ipynb").unlink()
    shutil.rmtree(course / "submitted" / "b_sleeper")
    results = classroom.grade(course, A, jobs=2, students=["c1"], progress=lambda line: None)
    assert [(r.student, r.status) for r in results] == [("c1", "graded")]
    assert scores(course) == {"a1": 20.0, "a2": 20.0, "c1": 20.0}


def test_a_missing_or_corrupt_gradebook_is_reported_with_the_way_back(course):
    submit(course, "alice")
    assert [r.status for r in classroom.grade(course, A, jobs=1, progress=lambda line: None)] == ["graded"]
    saved = gradebook.backups(course)
    assert saved, "no backup was made before grading"

    def run_grade():
        return subprocess.run([sys.executable, "-m", "coursekit.classroom", "--course", str(course), "grade", A],
                              env=tool_env(), capture_output=True, text=True)

    (course / "gradebook.db").rename(course / "lost.db")
    result = run_grade()
    assert result.returncode == 2
    assert "gradebook.db does not exist" in result.stderr
    assert f"cp {saved[-1].relative_to(course)} gradebook.db" in result.stderr

    (course / "gradebook.db").write_bytes(b"this is not a database" * 100)
    result = run_grade()
    assert result.returncode == 2 and "is not a readable gradebook" in result.stderr
    assert "cp reports/backups/" in result.stderr

    # the way back works: the backup is the gradebook as it was before the last run
    shutil.copy(saved[-1], course / "gradebook.db")
    gradebook.check_released(course, A)
    assert A in {row[0] for row in sqlite3.connect(course / "gradebook.db").execute("SELECT name FROM assignment")}


def test_only_one_grading_run_at_a_time(course):
    submit(course, "alice")
    with _Lock(course):
        with pytest.raises(RuntimeError, match="another grading run"):
            classroom.grade(course, A, jobs=1, progress=lambda line: None)


@pytest.mark.parametrize("value", ["0", "two", "-1", "2.5"])
def test_a_bad_thread_count_stops_grading_before_anything_changes(course, monkeypatch, value):
    submit(course, "alice")
    before = sorted((str(p.relative_to(course)), p.stat().st_mtime_ns) for p in course.rglob("*"))
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(ValueError, match=f"OMP_NUM_THREADS must be a positive integer.*got '{value}'"):
        classroom.grade(course, A, jobs=1, progress=lambda line: None)
    assert sorted((str(p.relative_to(course)), p.stat().st_mtime_ns) for p in course.rglob("*")) == before
