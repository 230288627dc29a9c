"""Grading a class with coursekit.classroom: every student graded or listed with a reason,
bad submissions repaired or rejected without stopping the batch, no stale grade exported,
feedback without hidden tests, and the same scores as nbgrader alone."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from coursekit import classroom
from coursekit import course as registry
from coursekit.classroom.common import nbgrader_bin
from coursekit.classroom.grade import _make_shard
from coursekit.classroom.integrity import verify
from conftest import cell_index, edit, released_course, tool_env

pytestmark = pytest.mark.slow
A = "scaling"
# $OMP_NUM_THREADS of the first grading: not what its two jobs would give on this machine alone
THREADS = (os.cpu_count() or 1) // 2 + 1
MINMAX_RETURN = "return (X - self.data_min) / self.data_range * (high - low) + low"


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    return released_course(tmp_path_factory.mktemp("class"), A)


def submit(course, student, nb=None, name=f"{A}.ipynb", text=None):
    folder = course / "submitted" / student / A
    folder.mkdir(parents=True, exist_ok=True)
    if nb is not None or text is not None:
        (folder / name).write_text(text if text is not None else json.dumps(nb))


@pytest.fixture(scope="module")
def graded(course):
    solution = json.loads((course / "solutions" / A / f"{A}.ipynb").read_text())
    submit(course, "alice", solution)
    submit(course, "bob", solution, name=f"{A} (1).ipynb")
    duplicated = json.loads(json.dumps(solution))
    i = cell_index(duplicated, "min_max_scaler")
    duplicated["cells"].insert(i + 1, json.loads(json.dumps(duplicated["cells"][i])))
    j = cell_index(duplicated, "check_min_max_transform")
    duplicated["cells"].insert(j + 1, json.loads(json.dumps(duplicated["cells"][j])))
    submit(course, "carol", duplicated)
    deleted = json.loads(json.dumps(solution))
    del deleted["cells"][cell_index(deleted, "check_min_max_transform")]
    submit(course, "dave", deleted)
    submit(course, "erin", text='{"cells": [ this is not json')
    submit(course, "frank")                                            # a folder without a notebook
    submit(course, "grace", edit(solution, "min_max_scaler", "class MinMaxScaler", "while True:\n    pass\n\n\nclass MinMaxScaler"))
    submit(course, "heidi", solution)                                  # graded now, broken later
    # 10 MB of output in 200,000 lines, printed 100 lines at a time (200,000 separate prints take
    # 5 s on a quiet machine: near the 10-s cell limit under the suite's load)
    submit(course, "ivan", edit(solution, "min_max_scaler", "class MinMaxScaler",
                                "for i in range(2_000):\n    print(('x' * 50 + '\\n') * 100, i)\n\n\nclass MinMaxScaler"))
    submit(course, "judy", edit(solution, "min_max_scaler", MINMAX_RETURN,
                                "import sys, warnings\n        warnings.warn('a UserWarning', UserWarning)\n"
                                "        print('debug on stderr, torch threads:', torch.get_num_threads(), file=sys.stderr)"
                                "\n        " + MINMAX_RETURN))
    submit(course, "kim", edit(solution, "min_max_scaler", MINMAX_RETURN,
                               "lo, hi = X.amin(dim=0), X.amax(dim=0)\n        return (X - lo) / (hi - lo) * (high - low) + low"))
    lines = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", str(THREADS))
        first = classroom.grade(course, A, jobs=2, timeout=10, progress=lines.append)
    heidi_first = _score(course, "heidi")
    # heidi's regrade fails: her old grade must not survive
    submit(course, "heidi", edit(solution, "standard_scaler", "class StandardScaler",
                                 "import os\nos._exit(1)\n\n\nclass StandardScaler"))
    second = classroom.grade(course, A, jobs=1, students=["heidi"], progress=lines.append)
    return {s.student: s for s in first}, {s.student: s for s in second}, heidi_first, lines


def _score(course, student):
    from nbgrader.api import Gradebook, MissingEntry
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            return gb.find_submission(A, student).score
        except MissingEntry:
            return None


def test_every_student_is_graded_or_listed_with_a_reason(graded, course):
    first, second, _, lines = graded
    statuses = {s: r.status for s, r in first.items()}
    assert statuses == {"alice": "graded", "bob": "graded", "carol": "graded", "dave": "graded",
                        "erin": "rejected", "frank": "rejected", "grace": "graded", "heidi": "graded",
                        "ivan": "graded", "judy": "graded", "kim": "graded"}
    assert "not a valid notebook" in first["erin"].reason and "JSON" in first["erin"].reason
    assert "scaling.ipynb is missing (found: no notebook)" == first["frank"].reason
    assert any(line.startswith("graded ") for line in lines)   # progress while it runs
    rows = {r["student"]: r for r in csv.DictReader(open(course / "reports" / A / "status.csv"))}
    assert rows["erin"]["status"] == "rejected" and rows["erin"]["reason"]


def test_repairs_are_made_and_reported(graded):
    first = graded[0]
    assert first["bob"].repairs == ["'scaling (1).ipynb' was renamed 'scaling.ipynb'"]
    assert any("'min_max_scaler' (a copy)" in r for r in first["carol"].repairs)
    assert any("'check_min_max_transform' (a copy)" in r for r in first["carol"].repairs)
    assert any("the deleted cell 'check_min_max_transform' was put back" in r for r in first["dave"].repairs)


def test_scores(graded, course):
    full = registry.assignment(A).autograded
    for student in ("alice", "bob", "carol", "dave", "ivan", "judy"):
        assert _score(course, student) == full, student           # stderr, huge output, repairs: full points
    assert graded[2] == full                                        # heidi, the first time
    grace = _score(course, "grace")                                 # the loop was interrupted: min-max checks lost
    assert 0 < grace < full
    assert _score(course, "kim") < full


def test_kernels_run_torch_with_the_threads_asked(graded, course):
    """$OMP_NUM_THREADS, when set, is the number of torch's threads in each kernel."""
    nb = json.loads((course / "autograded" / "judy" / A / f"{A}.ipynb").read_text())
    stderr = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", [])
                     if o.get("name") == "stderr")
    assert f"debug on stderr, torch threads: {THREADS}\n" in stderr


def test_a_failed_regrade_leaves_no_stale_grade(graded, course):
    second = graded[1]
    assert second["heidi"].status == "failed" and "kernel died" in second["heidi"].reason
    assert _score(course, "heidi") is None
    assert not (course / "autograded" / "heidi" / A).exists()
    path = classroom.export(course)
    rows = {r["student_id"]: r for r in csv.DictReader(open(path)) if r["assignment"] == A}
    assert rows["heidi"]["score"] == "" and rows["heidi"]["status"] == "failed"
    assert rows["erin"]["status"] == "rejected" and rows["erin"]["score"] == ""
    assert float(rows["alice"]["score"]) == registry.assignment(A).autograded and rows["alice"]["status"] == "graded"
    assert (course / "reports" / A / "report.png").stat().st_size > 1000
    report = (course / "reports" / A / "report.md").read_text()
    assert "| check_min_max_transform |" in report and "hidden_min_max" in report


def test_feedback_shows_messages_never_hidden_tests(graded, course):
    classroom.feedback(course, A)
    html = (course / "feedback" / "kim" / A / f"{A}.html").read_text()
    assert "BEGIN HIDDEN TESTS" not in html and "seed=2718" not in html and "seed=31415" not in html
    assert "hidden tests: they ran here" in html
    assert "transform(X) returned wrong values" in html or "returned wrong values" in html
    for student in ("alice", "grace"):
        text = (course / "feedback" / student / A / f"{A}.html").read_text()
        assert "seed=2718" not in text and "BEGIN HIDDEN TESTS" not in text


def test_parallel_grading_gives_nbgraders_scores(graded, course, tmp_path):
    """The same submissions graded by plain sequential `nbgrader autograde` score the same."""
    plain = tmp_path / "plain"
    shutil.copytree(course, plain, ignore=shutil.ignore_patterns("autograded", "feedback", "reports", "gradebook.db"))
    for student in ("erin", "frank", "heidi"):
        shutil.rmtree(plain / "submitted" / student)
    released_course(plain, A)   # a fresh gradebook, as `nbgrader generate_assignment` makes it
    subprocess.run([str(Path(sys.executable).parent / "nbgrader"), "autograde", A, "--Execute.timeout=10"],
                   cwd=plain, env=tool_env(), check=True, capture_output=True)
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{plain / 'gradebook.db'}") as gb:
        for student in ("alice", "bob", "carol", "dave", "grace", "ivan", "judy", "kim"):
            assert gb.find_submission(A, student).score == _score(course, student), student


# --------------------------------------------------------------------------- integrity

WRONG_MINMAX = "return X * 0"   # a wrong transform, whose check fails honestly
CHEATS = {
    "mallory": "import coursekit.grading.scaling as g\ng.check_min_max_transform = lambda *a, points=1, **k: float(points)\n",
    "nick": "get_ipython().showtraceback = lambda *a, **k: None\n",
    "olivia": "import torch.testing\ntorch.testing.assert_close = lambda *a, **k: None\n",
    "peggy": "",       # returns an object that claims to equal anything
    "quinn": ("import os, sqlite3\ntry:\n    con = sqlite3.connect(os.path.abspath('../../../gradebook.db'))\n"
              "    con.execute('UPDATE grade_cells SET max_score = 100')\n    con.commit()\n"
              "    hidden = con.execute('SELECT source FROM source_cell').fetchall()\n"
              "except Exception as e:\n    print('quinn:', e)\n"),
    "sam": "import builtins\nbuiltins.round = lambda *args, **kwargs: 0\n",
    "rita": "",        # honest, with the same wrong transform: the score to beat
}


@pytest.fixture(scope="module")
def cheaters(graded, course):
    solution = json.loads((course / "solutions" / A / f"{A}.ipynb").read_text())
    for student, cheat in CHEATS.items():
        wrong = "class Anything:\n            def __eq__(self, other):\n                return True\n" \
                "        return Anything()" if student == "peggy" else WRONG_MINMAX
        nb = edit(solution, "min_max_scaler", MINMAX_RETURN, wrong)
        nb = edit(nb, "min_max_scaler", "class MinMaxScaler", cheat + "\n\nclass MinMaxScaler")
        submit(course, student, nb)
    results = classroom.grade(course, A, jobs=2, students=["mallory", "nick", "olivia", "peggy", "rita", "sam"], progress=print)
    results += classroom.grade(course, A, jobs=1, students=["quinn"], progress=print)
    return {r.student: r for r in results}


def test_cheats_do_not_raise_a_score(cheaters, course):
    honest = _score(course, "rita")                    # the same wrong transform, no cheating
    assert cheaters["rita"].status == "graded" and honest < 20
    for student in ("mallory", "nick", "olivia", "sam"):
        assert cheaters[student].status == "flagged", (student, cheaters[student])
        # the score recorded is the trusted checker's: the honest score of the same wrong code
        assert _score(course, student) == honest, student
    assert "coursekit.grading.scaling.check_min_max_transform" in cheaters["mallory"].reason
    # the patched checks passed in the kernel: both scores are in the reason, the trusted one recorded
    assert f"differs from the trusted score {honest:g}" in cheaters["mallory"].reason, cheaters["mallory"].reason
    assert "IPython.showtraceback" in cheaters["nick"].reason
    assert "torch.testing.assert_close" in cheaters["olivia"].reason
    assert "builtins.round" in cheaters["sam"].reason
    assert cheaters["peggy"].status == "graded" and _score(course, "peggy") <= honest
    # the gradebook is not in the sandbox: no effect on the score, noted for review
    assert cheaters["quinn"].status == "graded" and _score(course, "quinn") == honest
    quinn = json.loads((course / "autograded" / "quinn" / A / f"{A}.ipynb").read_text())
    assert "quinn: unable to open database file" in json.dumps(quinn)
    assert any("the gradebook" in r for r in cheaters["quinn"].review)
    assert any("the code refers to the grading machinery" in r for r in cheaters["mallory"].review)
    rows = {r["student_id"]: r for r in csv.DictReader(open(classroom.export(course))) if r["assignment"] == A}
    assert rows["mallory"]["status"] == "flagged" and float(rows["mallory"]["score"]) == honest
    assert "coursekit.grading.scaling.check_min_max_transform" in rows["mallory"]["notes"]


def test_a_tampered_gradebook_or_test_cell_is_caught_after_grading(graded, course, tmp_path):
    """What a kernel could change behind nbgrader's back is checked outside it."""
    shard = _make_shard(course, tmp_path / "shard", A, ["alice"])
    subprocess.run([nbgrader_bin(), "autograde", A, "--force"], cwd=shard, env=tool_env(),
                   check=True, capture_output=True)
    assert verify(course, shard, A, "alice", [f"{A}.ipynb"]) == []
    import sqlite3
    with sqlite3.connect(shard / "gradebook.db") as con:
        con.execute("UPDATE grade SET auto_score = 100")
    problems = verify(course, shard, A, "alice", [f"{A}.ipynb"])
    assert problems and all("is not what its output gives" in p for p in problems)
    path = shard / "autograded" / "alice" / A / f"{A}.ipynb"
    path.chmod(0o644)
    nb = json.loads(path.read_text())
    nb["cells"][cell_index(nb, "hidden_min_max")]["source"] = "20"
    path.write_text(json.dumps(nb))
    assert any("'hidden_min_max' ran with other code" in p for p in verify(course, shard, A, "alice", [f"{A}.ipynb"]))


def test_collect_from_a_folder_and_from_an_lms_zip(course, tmp_path):
    solution = (course / "solutions" / A / f"{A}.ipynb").read_text()
    folder = tmp_path / "downloads"
    (folder / "zoe").mkdir(parents=True)
    (folder / "zoe" / f"{A}.ipynb").write_text(solution)
    assert classroom.collect(course, A, folder).students == ["zoe"]
    assert (course / "submitted" / "zoe" / A / f"{A}.ipynb").exists()
    archive = tmp_path / "lms.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"yann_12345_attempt_{A}.ipynb", solution)
    assert "yann" in classroom.collect(course, A, archive).students
    assert (course / "submitted" / "yann" / A / f"{A}.ipynb").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        classroom.collect(course, A, tmp_path / "nothing")
    shutil.rmtree(course / "submitted" / "zoe")
    shutil.rmtree(course / "submitted" / "yann")


def test_command_line_errors_are_clear(tmp_path):
    result = subprocess.run([sys.executable, "-m", "coursekit.classroom", "--course", str(tmp_path), "grade", A],
                            capture_output=True, text=True, env=tool_env())
    assert result.returncode == 2 and "run `make release`" in result.stderr
