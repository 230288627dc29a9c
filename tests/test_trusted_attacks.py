"""A hostile student against the trusted checker (coursekit.classroom.checker).

Each scaling case takes a WRONG ``MinMaxScaler.transform`` (``return X * 0``) and adds one
trick; the trusted total must equal the score of the same wrong code without the trick (or
be lower, where the trick breaks the student's own worker). Where a trick tries to reach the
right answer by a forbidden route (the reference, the instructor's files, scikit-learn), the
trick's code returns that right answer when the route works, so a broken defence shows as a
higher score. The batchnorm cases check that a ready-made batch normalization, reached by an
alias, getattr or torch.ops, scores 0 and is reported, while a correct hand-written one keeps
its full points.
"""
from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from coursekit import course
from coursekit.classroom import checker, sandbox
from conftest import ROOT, cell_index, edit, trusted_spec

pytestmark = pytest.mark.slow

BWRAP = sandbox.bwrap_path()


@pytest.fixture(autouse=True, scope="module")
def _bubblewrap():
    """The worker runs in its sandbox: without bubblewrap these tests cannot run, and fail."""
    if BWRAP is None:
        pytest.fail("bubblewrap (bwrap) is not installed: `make test` installs Debian's bubblewrap, "
                    "or set BWRAP to its path", pytrace=False)

TIMEOUT = 20       # seconds per test cell for the cases that do not hang
HANG_TIMEOUT = 5   # for the cases that hang or corrupt the pipe (each costs a timeout)

# --------------------------------------------------------------------------- notebooks

MINMAX_RETURN = "return (X - self.data_min) / self.data_range * (high - low) + low"
FIT_FIRST = "self.data_min = X.amin(dim=0)"
CLASS_LINE = "class MinMaxScaler:"


def append(nb, grade_id, code):
    nb = json.loads(json.dumps(nb))
    cell = nb["cells"][cell_index(nb, grade_id)]
    cell["source"] = "".join(cell["source"]) + "\n\n" + textwrap.dedent(code).strip("\n") + "\n"
    return nb


def method_body(code: str) -> str:
    """``code`` as lines of a method (8 spaces), to replace a line that is already indented."""
    return textwrap.indent(textwrap.dedent(code).strip("\n"), " " * 8)[8:]


def wrong_scaling(solution, *, transform: str = "", before_class: str = "", after_class: str = ""):
    """The solution with a wrong MinMaxScaler.transform (``return X * 0``), which keeps its
    training data (``self._X``) so that a trick can compute the right answer from it.
    ``transform`` runs before the wrong return; ``before_class``/``after_class`` are code
    around the class in its cell."""
    nb = edit(solution, "min_max_scaler", FIT_FIRST, "self._X = X.clone()\n        " + FIT_FIRST)
    nb = edit(nb, "min_max_scaler", MINMAX_RETURN,
              (method_body(transform) + "\n        " if transform.strip() else "") + "return X * 0")
    if before_class.strip():
        nb = edit(nb, "min_max_scaler", CLASS_LINE, textwrap.dedent(before_class).strip("\n") + "\n\n\n" + CLASS_LINE)
    if after_class.strip():
        nb = append(nb, "min_max_scaler", after_class)
    return nb


def check(spec, nb, timeout=TIMEOUT, bwrap=BWRAP) -> checker.Result:
    return checker.check_notebook(spec, nb, bwrap=bwrap, timeout=timeout)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def scaling():
    return trusted_spec("scaling")


@pytest.fixture(scope="module")
def honest_wrong(scaling):
    """The score of the wrong transform without any trick: what every trick must not beat."""
    spec, solution = scaling
    result = check(spec, wrong_scaling(solution))
    assert not result.problems and not result.blocked and not result.forbidden, result
    assert result.scores["check_min_max_transform"] == 0.0, "the wrong transform must lose points"
    assert 0 < result.total < sum(p for _, _, p in spec.tests)
    return result


# --------------------------------------------------------------------------- the tricks

# The right answer by the reference, when the reference can be had (it cannot, in the worker).
REFERENCE_IMPORT = """
import importlib
try:
    ref = importlib.import_module("coursekit." + "scaling")
    return ref.MinMaxScaler(self.feature_range).fit(self._X).transform(X)
except Exception:
    pass
"""

# The same after taking the worker's import blocker off sys.meta_path.
BLOCKER_REMOVED = """
import importlib, sys
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_Blocker"]
for name in [n for n in sys.modules if n.split(".")[0] == "coursekit"]:
    del sys.modules[name]
try:
    ref = importlib.import_module("coursekit." + "scaling")
    return ref.MinMaxScaler(self.feature_range).fit(self._X).transform(X)
except Exception:
    pass
"""

# The reference's source, by inspect or from the files where coursekit lives (the editable
# install's mapping names the folder), run with exec.
EXEC_SOURCE = f"""
import importlib, inspect, sys
source = None
try:
    source = inspect.getsource(importlib.import_module("coursekit.scaling"))
except Exception:
    pass
places = [{str(ROOT / "coursekit")!r}]
for module in list(sys.modules.values()):
    places += list((getattr(module, "MAPPING", None) or {{}}).values()) if "editable" in getattr(module, "__name__", "") else []
for place in places:
    try:
        source = source or open(place + "/scaling.py").read()
    except OSError:
        pass
if source:
    namespace = {{"__name__": "reference"}}
    exec(source, namespace)
    return namespace["MinMaxScaler"](self.feature_range).fit(self._X).transform(X)
"""

# A wrapper class around scikit-learn's, defined after the student's own.
SKLEARN_WRAPPER = """
try:
    import numpy as np
    from sklearn.preprocessing import MinMaxScaler as _SkMinMax

    class MinMaxScaler:
        def __init__(self, feature_range=(0.0, 1.0)):
            self._sk = _SkMinMax(feature_range=feature_range)

        def fit(self, X):
            self._sk.fit(X.numpy())
            return self

        def transform(self, X):
            return torch.from_numpy(self._sk.transform(X.numpy())).to(X.dtype)

        def inverse_transform(self, X):
            return torch.from_numpy(self._sk.inverse_transform(X.numpy())).to(X.dtype)

        def fit_transform(self, X):
            return self.fit(X).transform(X)
except ImportError:
    pass
"""

PATCH_GRADING = """
try:
    import coursekit.grading as _cg
    import coursekit.grading.scaling as _gs
    _cg.assert_tensor = _gs.assert_tensor = lambda *a, **k: None
    _gs.check_min_max_transform = lambda *a, points=1, **k: float(points)
    _gs.check_min_max_edge_cases = lambda *a, points=1, **k: float(points)
except ImportError:
    pass
"""

IPYTHON_HOOK = """
def _ok(*args):
    print("coursekit-integrity: ok")
try:
    get_ipython().events.register("post_run_cell", _ok)
except NameError:
    pass
try:
    from IPython import get_ipython as _get
    if _get() is not None:
        _get().events.register("post_run_cell", _ok)
except ImportError:
    pass
"""

PATCH_COMPARISON = """
import torch.testing._comparison as _comparison
_comparison.not_close_error_metas = lambda *a, **k: []
"""

PATCH_ASSERT_CLOSE = """
import torch.testing
torch.testing.assert_close = lambda *a, **k: None
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
"""

PATCH_BUILTINS = """
import builtins
builtins.round = lambda *a, **k: 0
builtins.isinstance = lambda *a, **k: True
builtins.issubclass = lambda *a, **k: True
"""

LIAR = """
class _Liar:
    shape, dtype = X.shape, X.dtype
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        return True
    def __getattr__(self, name):
        return getattr(X, name)
return _Liar()
"""

TENSOR_SUBCLASS = """
class _Tensor(torch.Tensor):
    def __eq__(self, other):
        return torch.ones_like(other, dtype=torch.bool)
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.equal, torch.allclose, torch.isclose):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})
return (X * 0).as_subclass(_Tensor)
"""

# partial / lambda in place of the class: of the reference when it can be imported
# (it cannot), else of the student's own class.
PARTIAL = """
import functools
try:
    import coursekit.scaling as _ref
    MinMaxScaler = functools.partial(_ref.MinMaxScaler)
except ImportError:
    MinMaxScaler = functools.partial(MinMaxScaler)
"""

LAMBDA = """
try:
    import coursekit.scaling as _ref
    _target = _ref.MinMaxScaler
except ImportError:
    _target = MinMaxScaler
MinMaxScaler = lambda *args, **kwargs: _target(*args, **kwargs)
"""

LOTS_OF_OUTPUT = """
import sys, warnings
print("x" * 200_000)
for i in range(3000):
    print("line", i)
sys.stderr.write("e" * 200_000)
warnings.warn("a warning from the student", UserWarning)
"""

STDOUT_WRITES = """
import os, sys
sys.__stdout__.write("coursekit-integrity: ok\\n" * 1000)
sys.__stdout__.flush()
sys.__stderr__.write("coursekit-integrity: ok\\n")
os.write(1, b"\\x10\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00" + b'{"value": 4.0}' * 10)
os.write(2, b"garbage on stderr")
"""

# Garbage into every descriptor the worker may have kept (the replies' pipe among them).
GARBAGE_FDS = """
import os
for fd in range(3, 11):
    try:
        os.write(fd, b"\\xff" * 7 + b"garbage" * 100)
    except OSError:
        pass
"""

# A well-formed forged reply, in the wire's framing, into every pipe the worker can write
# (found through /proc/self/fd), claiming success.
FORGE_REPLIES = """
import json, os, struct
def _message(header):
    head = json.dumps(header).encode()
    return struct.pack("<QI", len(head), 0) + head
for name in os.listdir("/proc/self/fd"):
    fd = int(name)
    try:
        if fd > 2 and os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
            for header in ({"value": 4.0, "forbidden": []}, {"value": {"arg": 0}, "forbidden": []},
                           {"errors": [], "defined": ["MinMaxScaler", "StandardScaler"]}):
                os.write(fd, _message(header))
    except OSError:
        pass
"""

# A thread that outlives every request (not a daemon: the worker cannot exit at "bye"),
# writing into the descriptors and keeping the GIL busy now and then.
RUNNING_THREAD = """
import os, threading, time
def _run():
    while True:
        for fd in (1, 2):
            os.write(fd, b"coursekit-integrity: ok\\n")
        sum(range(20_000))
        time.sleep(0.01)
threading.Thread(target=_run).start()
"""

EXIT = """
import os
os._exit(0)
"""

LOOP = """
while True:
    pass
"""

SCALING_TRICKS = {
    # name: (where, code)
    "patch-grading-module": ("before_class", PATCH_GRADING),
    "ipython-post-run-cell-hook": ("before_class", IPYTHON_HOOK),
    "patch-not-close-error-metas": ("before_class", PATCH_COMPARISON),
    "patch-assert-close": ("before_class", PATCH_ASSERT_CLOSE),
    "object-equal-to-anything": ("transform", LIAR),
    "tensor-subclass": ("transform", TENSOR_SUBCLASS),
    "reference-by-import-module": ("transform", REFERENCE_IMPORT),
    "reference-after-removing-the-blocker": ("transform", BLOCKER_REMOVED),
    "exec-the-reference-source": ("transform", EXEC_SOURCE),
    "functools-partial": ("after_class", PARTIAL),
    "lambda": ("after_class", LAMBDA),
    "sklearn-wrapper-class": ("after_class", SKLEARN_WRAPPER),
    "lots-of-output": ("transform", LOTS_OF_OUTPUT),
    "writes-to-stdout-fd-1": ("transform", STDOUT_WRITES),
    "thread-that-keeps-running": ("before_class", RUNNING_THREAD),
}

# tricks that break the student's own worker: they may lose points, never win any
BREAKING_TRICKS = {
    "patch-builtins": ("transform", PATCH_BUILTINS, TIMEOUT),
    "garbage-into-fds-3-to-10": ("transform", GARBAGE_FDS, HANG_TIMEOUT),
    "forged-protocol-replies": ("transform", FORGE_REPLIES, HANG_TIMEOUT),
    "os-exit-in-transform": ("transform", EXIT, TIMEOUT),
    "infinite-loop-in-transform": ("transform", LOOP, HANG_TIMEOUT),
}


def _tricked(solution, where, code, *, once=False):
    if once:   # only in the first call of the first check, not in the notebook's own demo cell
        code = ("if tuple(X.shape) == (20, 3) and X.dtype == torch.float32:\n"
                + textwrap.indent(textwrap.dedent(code).strip("\n"), "    "))
    return wrong_scaling(solution, **{where: code})


@pytest.mark.parametrize("name", list(SCALING_TRICKS))
def test_a_trick_does_not_raise_the_score(name, scaling, honest_wrong):
    spec, solution = scaling
    where, code = SCALING_TRICKS[name]
    result = check(spec, _tricked(solution, where, code))
    assert result.scores == honest_wrong.scores, (result.scores, result.messages, result.problems)
    assert result.total == honest_wrong.total
    if name in ("patch-grading-module", "reference-by-import-module", "functools-partial", "lambda"):
        assert any(b.startswith("coursekit") for b in result.blocked), result.blocked
    if name.startswith("sklearn"):
        assert any(b.startswith("sklearn") for b in result.blocked), result.blocked


@pytest.mark.parametrize("name", list(BREAKING_TRICKS))
def test_a_trick_that_breaks_the_worker_only_loses_points(name, scaling, honest_wrong):
    spec, solution = scaling
    where, code, timeout = BREAKING_TRICKS[name]
    started = time.monotonic()
    result = check(spec, _tricked(solution, where, code, once=where == "transform"), timeout=timeout)
    seconds = time.monotonic() - started
    assert result.total <= honest_wrong.total, (result.scores, result.messages, result.problems)
    for gid, score in result.scores.items():
        assert score <= honest_wrong.scores[gid], (gid, result.scores)
    # a worker that hangs or dies costs at most a timeout per start, never the whole run
    assert seconds < checker.MAX_STARTS * (timeout + 10), seconds
    assert result.problems, "the lost worker should be reported"
    assert result.total == honest_wrong.total   # a fresh worker: the later cells keep their points


def test_an_sklearn_import_at_the_top_of_the_cell_is_blocked(scaling, honest_wrong):
    """The cell fails at the import: the class is never defined, the score can only drop."""
    spec, solution = scaling
    code = "import numpy as np\nfrom sklearn.preprocessing import MinMaxScaler as _Sk"
    result = check(spec, wrong_scaling(solution, before_class=code))
    assert any(b.startswith("sklearn") for b in result.blocked), result.blocked
    assert any("sklearn" in p and "not available" in p for p in result.problems), result.problems
    assert result.total <= honest_wrong.total


def test_the_reference_trick_works_without_the_sandbox(scaling, honest_wrong):
    """Control: the trick's code does reach the right answer where the reference can be
    imported (a plain process, no sandbox): so the sandboxed cases above test a defence."""
    spec, solution = scaling
    result = check(spec, _tricked(solution, "transform", BLOCKER_REMOVED), bwrap=None)
    assert result.total > honest_wrong.total, result.scores


SECRETS = [ROOT / "solutions" / "scaling" / "scaling.ipynb", ROOT / "gradebook.db", ROOT / "nbgrader_config.py",
           ROOT / "coursekit" / "scaling.py", ROOT / "coursekit" / "grading" / "scaling.py",
           ROOT / "exercises" / "scaling" / "scaling.ipynb", ROOT / "tests" / "conftest.py"]
BASE_SITE = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"

# What the worker can reach, reported through the one channel it has here: an error of its
# last cell (``Cell In[n]: RuntimeError: PROBE ...`` in the problems).
PROBE = f"""
import os, sys, importlib
readable, wrote, imported = [], [], []
paths = {[str(p) for p in SECRETS]!r}
for folder in ("solutions", "exercises", "submitted", "autograded", ""):
    try:
        names = [n for n in os.listdir(os.path.join({str(ROOT)!r}, folder)) if n != ".venv"]
    except OSError:
        continue
    readable += [f"ls {{folder or '.'}}"] if names else []
    paths += [os.path.join({str(ROOT)!r}, folder, name) for name in names]
for path in paths:
    try:
        with open(path, "rb") as f:
            f.read(1)
        readable.append(os.path.basename(path))
    except OSError:
        pass
# every writable folder outside the sandbox's own in-memory ones (/tmp is one, but a folder
# bound into it lies on the grader's disk)
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    mount, kind = fields[4], fields[fields.index("-") + 1]
    if kind != "tmpfs" and mount not in ("/proc", "/dev") and os.access(mount, os.W_OK):
        try:
            with open(os.path.join(mount, "written-by-the-student"), "w") as f:
                f.write("x")
            wrote.append(mount)
            os.remove(os.path.join(mount, "written-by-the-student"))
        except OSError:
            pass
# the libraries a solution may not use, after taking the import blocker away, from any
# site-packages folder the worker can see (the base interpreter's included)
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_Blocker"]
sys.path[:0] = [{str(BASE_SITE)!r}]
for name in {[n for n in checker.BLOCKED]!r}:
    for loaded in [m for m in sys.modules if m.split(".")[0] == name]:
        del sys.modules[loaded]
    try:
        module = importlib.import_module(name)
        if getattr(module, "__file__", None):
            imported.append(name)
    except Exception:
        pass
raise RuntimeError(f"PROBE readable={{readable}} wrote={{len(wrote)}} imported={{imported}}")
"""


@pytest.fixture(scope="module")
def probe(scaling, honest_wrong):
    spec, solution = scaling
    result = check(spec, append(wrong_scaling(solution), "standard_scaler", PROBE))
    assert result.total == honest_wrong.total, result.scores
    notes = [p for p in result.problems if "PROBE" in p]
    assert len(notes) == 1, result.problems
    return notes[0]


def test_the_instructors_files_cannot_be_read(probe):
    assert "readable=[]" in probe, probe


def test_the_worker_cannot_write_to_the_graders_disk(probe):
    assert "wrote=0" in probe, probe


def test_no_blocked_library_can_be_imported_even_without_the_blocker(probe):
    assert "imported=[]" in probe, probe


def test_a_graded_name_that_cannot_cross_does_not_crash_the_checker(scaling, honest_wrong):
    """A graded name bound to a value the wire refuses (nested too deep) scores 0 for its
    cells; the other cells keep their points, and check_notebook returns."""
    spec, solution = scaling
    nb = append(wrong_scaling(solution), "standard_scaler",
                "StandardScaler = []\nfor _ in range(40):\n    StandardScaler = [StandardScaler]")
    result = check(spec, nb)
    assert result.total <= honest_wrong.total
    assert result.scores["check_min_max_inverse"] == honest_wrong.scores["check_min_max_inverse"]


# --------------------------------------------------------------------------- batchnorm

BN_START = "    ### BEGIN SOLUTION\n    dims"
BN_CELLS = ("check_batch_norm_train", "check_batch_norm_running_stats", "check_batch_norm_eval", "hidden_batch_norm")
BN_ARGS = "input, running_mean, running_var, weight, bias, training, momentum, eps"
ATEN_ARGS = "input, weight, bias, running_mean, running_var, training, momentum, eps"


@pytest.fixture(scope="module")
def batchnorm():
    return trusted_spec("batchnorm")


def ready_made(solution, code):
    """The solution whose batch_norm returns ``code`` (a ready-made batch normalization)."""
    body = textwrap.indent(textwrap.dedent(code).strip("\n"), "    ") + "\n"
    return edit(solution, "batch_norm", BN_START, body + BN_START)


def test_a_correct_batch_norm_by_hand_gets_full_points(batchnorm):
    spec, solution = batchnorm
    result = check(spec, solution)
    assert result.total == course.assignment("batchnorm").autograded, (result.scores, result.messages)
    assert not result.forbidden and not result.problems and not result.blocked


BN_ROUTES = {
    "alias": f"f = torch.nn.functional.batch_norm\nreturn f({BN_ARGS})",
    "getattr": f"f = getattr(getattr(torch.nn, 'func' + 'tional'), 'batch' + '_norm')\nreturn f({BN_ARGS})",
    "aten-native-batch-norm": f"return torch.ops.aten.native_batch_norm({ATEN_ARGS})[0]",
    "aten-native-batch-norm-default": f"return torch.ops.aten.native_batch_norm.default({ATEN_ARGS})[0]",
}

# Routes the worker's watch (worker._Watch, sys.setprofile) does not see:
# - a C builtin called from C code (functools.partial, map; also torch.batch_norm.__call__)
#   raises no profile event;
# - an operator overload's own C++ callable (torch.ops.aten.<op>.default._op) is neither a
#   builtin of a forbidden name nor _ops.py's __call__;
# - a thread started while the cells ran (no watch then) has no profile hook;
# - a TorchScript function compiled while the cells ran calls aten::batch_norm in C++.
# (prelude at the top of the cell, body of batch_norm); the version bump makes the checker
# copy the running statistics back (see the .data case below).
BUMP = "\nwith torch.no_grad():\n    for t in (running_mean, running_var):\n        if t is not None:\n            t.add_(0)"
BN_UNSEEN_ROUTES = {
    "functools-partial-of-the-builtin": (
        "import functools",
        f"out = functools.partial(torch.batch_norm)({ATEN_ARGS}, False){BUMP}\nreturn out"),
    "aten-overloads-own-op": (
        "", f"out = torch.ops.aten.native_batch_norm.default._op({ATEN_ARGS})[0]{BUMP}\nreturn out"),
    "thread-started-by-the-cell": (
        "import queue, threading\n_jobs, _done = queue.Queue(), queue.Queue()\n\n\n"
        "def _serve():\n    while True:\n        _done.put(torch.nn.functional.batch_norm(*_jobs.get()))\n\n\n"
        "threading.Thread(target=_serve, daemon=True).start()",
        f"_jobs.put(({BN_ARGS}))\nout = _done.get(){BUMP}\nreturn out"),
    "torchscript-compiled-by-the-cell": (
        "from typing import Optional\n\n\n@torch.jit.script\n"
        "def _bn(x: torch.Tensor, w: Optional[torch.Tensor], b: Optional[torch.Tensor], rm: Optional[torch.Tensor],\n"
        "        rv: Optional[torch.Tensor], training: bool, momentum: float, eps: float) -> torch.Tensor:\n"
        "    return torch.batch_norm(x, w, b, rm, rv, training, momentum, eps, False)",
        f"out = _bn({ATEN_ARGS}){BUMP}\nreturn out"),
}


def _assert_ready_made_scores_zero(spec, result, honest_backward):
    assert result.forbidden.get("batch_norm"), (result.forbidden, result.scores)
    for gid in BN_CELLS:
        assert result.scores[gid] == 0.0, (gid, result.scores, result.messages.get(gid))
        assert "ready-made" in result.messages[gid]
    assert result.scores["check_batch_norm_backward"] == honest_backward


@pytest.mark.parametrize("route", list(BN_ROUTES))
def test_a_ready_made_batch_norm_scores_zero_and_is_reported(route, batchnorm):
    spec, solution = batchnorm
    result = check(spec, ready_made(solution, BN_ROUTES[route]))
    _assert_ready_made_scores_zero(spec, result, 5.0)
    assert result.total == 8.0   # batch_norm_backward, the solution's, keeps its points


@pytest.mark.parametrize("route", BN_UNSEEN_ROUTES)
def test_a_ready_made_batch_norm_out_of_the_watchs_sight_is_reported(route, batchnorm):
    spec, solution = batchnorm
    prelude, body = BN_UNSEEN_ROUTES[route]
    nb = ready_made(solution, body)
    if prelude:
        nb = edit(nb, "batch_norm", "def batch_norm(", prelude + "\n\n\ndef batch_norm(")
    result = check(spec, nb)
    assert result.total <= 8.0, (result.scores, result.forbidden)   # a hand-written batch_norm_backward only
    # a thread of the submission's own runs during every call: none of them can be watched
    _assert_ready_made_scores_zero(spec, result, 0.0 if route.startswith("thread") else 5.0)
    if route.startswith("thread"):
        assert any("thread" in hit for hit in result.forbidden["batch_norm"]), result.forbidden


def test_running_statistics_updated_through_data_keep_full_points(batchnorm):
    spec, solution = batchnorm
    nb = edit(solution, "batch_norm", "running_mean.mul_(", "running_mean.data.mul_(")
    nb = edit(nb, "batch_norm", "running_var.mul_(", "running_var.data.mul_(")
    result = check(spec, nb)
    assert result.total == course.assignment("batchnorm").autograded, (result.scores, result.messages)
