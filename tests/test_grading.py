"""coursekit.grading: the check machinery, and the scaling checks on right and wrong answers."""
import sys
import warnings

import pytest
import torch

from coursekit import scaling as reference
from coursekit.grading import CheckFailure, assert_tensor, call, check, quiet
from coursekit.grading import scaling as checks
from conftest import ROOT, notebook_cells, student_classes, with_mistake

MIN_MAX_CHECKS = [checks.check_min_max_transform, checks.check_min_max_inverse, checks.check_min_max_edge_cases]
STANDARD_CHECKS = [checks.check_standard_transform, checks.check_standard_inverse, checks.check_standard_edge_cases]


@pytest.fixture(scope="module")
def solution(scaling_solution):
    return student_classes(scaling_solution["min_max_scaler"], scaling_solution["standard_scaler"])


# --- the machinery --------------------------------------------------------------------------

def test_check_returns_its_points_as_float():
    @check
    def passes(x):
        pass
    assert passes(1, points=2.5) == 2.5 and isinstance(passes(1, points=3), float)
    assert passes(1) == 1.0


@pytest.mark.parametrize("points", [-1, "2", True, None])
def test_check_rejects_bad_points(points):
    @check
    def passes():
        pass
    with pytest.raises(ValueError, match="points must be a non-negative number"):
        passes(points=points)


def test_quiet_silences_warnings_python_stderr_and_fd2(capfd):
    import os

    def noisy(x):
        warnings.warn("deprecated!", UserWarning)
        print("python-level stderr", file=sys.stderr)
        os.write(2, b"fd-level stderr\n")
        return x * 2

    @check
    def doubles(fn):
        x = torch.arange(3.0)
        assert_tensor(call(fn, x, what="fn(x)"), x * 2, what="fn(x)")

    assert doubles(noisy, points=1) == 1.0
    out, err = capfd.readouterr()
    assert err == ""
    # stderr works again afterwards
    print("after", file=sys.stderr)
    assert "after" in capfd.readouterr().err


def test_quiet_restores_stderr_after_a_failure(capfd):
    @check
    def fails():
        raise CheckFailure("teaching message")
    with pytest.raises(CheckFailure, match="teaching message"):
        fails()
    with quiet():
        pass
    print("visible", file=sys.stderr)
    assert "visible" in capfd.readouterr().err


def test_student_exception_becomes_a_teaching_failure():
    def broken(x):
        return x.reshape(7, 7)
    with pytest.raises(CheckFailure, match=r"fn\(x\) raised RuntimeError: shape '\[7, 7\]' is invalid"):
        call(broken, torch.ones(3), what="fn(x)")
    def stub(x):
        raise NotImplementedError()
    with pytest.raises(CheckFailure, match=r"replace the `raise NotImplementedError\(\)` line"):
        call(stub, torch.ones(3), what="fn(x)")


# --- the student's own failing line ---------------------------------------------------------

def student_function(source: str, name: str, filename: str = "/tmp/ipykernel_4242/2718281828.py"):
    """A function defined in a notebook cell: its source is registered in linecache under
    the cell's file name, as IPython does."""
    import linecache
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"torch": torch}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


BROKEN_CELL = """def normalize(x):
    mean = x.mean(dim=0)
    return (x - mean) / x.std(dim=0).view(7, 7)
"""


def test_a_student_error_shows_the_students_own_failing_line():
    fn = student_function(BROKEN_CELL, "normalize")
    with pytest.raises(CheckFailure) as info:
        call(fn, torch.ones(4, 3), what="normalize(x)", hint="reshape (C,) vectors to (1, C)")
    message = str(info.value)
    assert message.startswith("normalize(x) raised RuntimeError: shape '[7, 7]' is invalid")
    assert "\nLikely cause: reshape (C,) vectors to (1, C)\n" in message
    assert message.endswith("In your code, /tmp/ipykernel_4242/2718281828.py, line 3, in normalize:\n"
                            "    return (x - mean) / x.std(dim=0).view(7, 7)")


def test_the_failing_line_is_the_deepest_student_frame_not_torchs_or_the_stdlibs(tmp_path, monkeypatch):
    """A real module file; the error is raised inside torch's Python code (F.pad) and the
    standard library (copy), called from a helper of the student's."""
    (tmp_path / "student_module.py").write_text(
        "import copy\n"
        "import torch.nn.functional as F\n\n\n"
        "def helper(x):\n"
        "    return F.pad(x, (1, 2, 3))\n\n\n"
        "def padded(x):\n"
        "    y = x * 2\n"
        "    return helper(y)\n\n\n"
        "def copied(x):\n"
        "    return copy.deepcopy(x, memo=7)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import student_module
    with pytest.raises(CheckFailure) as info:
        call(student_module.padded, torch.ones(2, 2), what="padded(x)")
    assert f"In your code, {tmp_path / 'student_module.py'}, line 6, in helper:\n    return F.pad(x, (1, 2, 3))" \
        in str(info.value)
    with pytest.raises(CheckFailure) as info:
        call(student_module.copied, torch.ones(2), what="copied(x)")
    assert "line 15, in copied:\n    return copy.deepcopy(x, memo=7)" in str(info.value)


def test_a_notebook_cell_is_named_as_ipython_names_it(monkeypatch):
    import IPython

    filename = "/tmp/ipykernel_4242/31415.py"
    shell = type("Shell", (), {"compile": type("Compiler", (), {"_filename_map": {filename: 12}})()})()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    fn = student_function(BROKEN_CELL, "normalize", filename)
    with pytest.raises(CheckFailure, match=r"In your code, Cell In\[12\], line 3, in normalize:\n    return"):
        call(fn, torch.ones(4, 3), what="normalize(x)")


def test_without_source_the_place_is_still_named():
    namespace = {}
    exec(compile("def f(x):\n    return x.nope\n", "<solution cell>", "exec"), namespace)
    with pytest.raises(CheckFailure) as info:
        call(namespace["f"], torch.ones(2), what="f(x)")
    assert str(info.value).endswith("raised AttributeError: 'Tensor' object has no attribute 'nope'\n"
                                    "In your code, <solution cell>, line 2, in f.")


def test_a_ready_made_call_and_a_wrong_error_kind_show_the_line_too():
    from coursekit.grading import check_own_work, expect_value_error

    fn = student_function("def fans(t):\n    return torch.nn.init._calculate_fan_in_and_fan_out(t)\n", "fans")

    @check_own_work("fans", [(torch.nn.init, "_calculate_fan_in_and_fan_out")], what="fan computation")
    def check_fans(student):
        call(student, torch.ones(3, 2), what="fans(t)")

    with pytest.raises(CheckFailure) as info:
        check_fans(fn)
    assert str(info.value).startswith("fans(t): your code calls a ready-made fan computation")
    assert "line 2, in fans:\n    return torch.nn.init._calculate_fan_in_and_fan_out(t)" in str(info.value)
    wrong_kind = student_function("def f(p):\n    return [0][p]\n", "f")
    with pytest.raises(CheckFailure) as info:
        expect_value_error(wrong_kind, 5, what="f(5)", why="p must be 0.")
    assert str(info.value).startswith("f(5) raised IndexError: list index out of range; it should raise ValueError")
    assert str(info.value).endswith("line 2, in f:\n    return [0][p]")


def test_student_line_is_empty_when_no_frame_is_the_students():
    from coursekit.grading import student_line
    try:
        torch.ones(2).reshape(3)
    except RuntimeError as e:
        error = e.with_traceback(None)
    assert student_line(error) == ""


class AlwaysEqual:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False


@pytest.mark.parametrize("got, pattern", [
    (AlwaysEqual(), r"should return a torch.Tensor, but returned a AlwaysEqual"),
    ([1.0, 2.0], r"should return a torch.Tensor, but returned a list"),
    (torch.ones(2, 1), r"returned shape \(2, 1\), expected \(2,\)"),
    (torch.ones(2, dtype=torch.float64), r"returned dtype torch.float64, expected torch.float32"),
    (torch.tensor([1.0, float("nan")]), r"returned nan at index \(1,\), where 1 was expected"),
    (torch.tensor([1.0, 1.5]), r"(?s)wrong values.*largest difference 0.5 at index \(1,\)"),
])
def test_assert_tensor_rejects(got, pattern):
    with pytest.raises(CheckFailure, match=pattern):
        assert_tensor(got, torch.ones(2), what="f(x)")


def test_assert_tensor_names_a_recognised_mistake_but_not_the_right_answer():
    expected = torch.tensor([1.0, 2.0])
    mistakes = {"same as expected (must never be suggested)": expected.clone(),
                "you doubled it": expected * 2}
    with pytest.raises(CheckFailure, match="Likely mistake: you doubled it"):
        assert_tensor(expected * 2, expected, what="f(x)", mistakes=mistakes)
    with pytest.raises(CheckFailure) as info:
        assert_tensor(expected * 3, expected, what="f(x)", mistakes=mistakes)
    assert "Likely mistake" not in str(info.value)


# --- the scaling checks on the solution and on the released stub -----------------------------

@pytest.mark.parametrize("seed", range(6))
def test_solution_passes_every_check(solution, seed):
    for fn in MIN_MAX_CHECKS:
        assert fn(solution["MinMaxScaler"], seed=seed, points=2) == 2.0
    for fn in STANDARD_CHECKS:
        assert fn(solution["StandardScaler"], seed=seed, points=3) == 3.0
    wide = dict(shapes=[(1, 1), (2, 5), (300, 25)], seed=seed)
    assert checks.check_min_max_transform(solution["MinMaxScaler"], feature_ranges=[(-7.0, -2.5)], **wide) == 1.0
    assert checks.check_standard_inverse(solution["StandardScaler"], **wide) == 1.0


def test_released_stub_scores_nothing_with_a_clear_message():
    released = notebook_cells(ROOT / "exercises" / "scaling" / "scaling.ipynb")
    stub = student_classes(released["min_max_scaler"], released["standard_scaler"])
    for fn in MIN_MAX_CHECKS:
        with pytest.raises(CheckFailure, match=r"MinMaxScaler\(\) raised NotImplementedError: replace"):
            fn(stub["MinMaxScaler"])
    for fn in STANDARD_CHECKS:
        with pytest.raises(CheckFailure, match=r"StandardScaler\(\) raised NotImplementedError"):
            fn(stub["StandardScaler"])


@pytest.mark.parametrize("cls", [reference.MinMaxScaler, reference.StandardScaler])
def test_importing_the_reference_does_not_count(cls):
    check_fn = checks.check_min_max_transform if cls is reference.MinMaxScaler else checks.check_standard_transform
    with pytest.raises(CheckFailure, match="must be your own class"):
        check_fn(cls)

    class Sub(cls):
        pass
    with pytest.raises(CheckFailure, match="must be your own class"):
        check_fn(Sub)


# (cell, old, new, failing check, message pattern): each a mistake students make
MISTAKES = [
    ("min_max_scaler",
     "return (X - self.data_min) / self.data_range * (high - low) + low",
     "lo = X.amin(dim=0)\n        return (X - lo) / (X.amax(dim=0) - lo) * (high - low) + low",
     checks.check_min_max_transform, r"Likely mistake: transform recomputes the minimum and maximum"),
    ("min_max_scaler",
     "return (X - self.data_min) / self.data_range * (high - low) + low",
     "return (X - self.data_min) / self.data_range",
     checks.check_min_max_transform, r"is in \[0, 1\] instead of feature_range=\(-1.0, 1.0\)"),
    ("min_max_scaler",
     "self.data_min = X.amin(dim=0)\n        data_range = X.amax(dim=0) - self.data_min",
     "self.data_min = X.amin().expand(X.shape[1])\n        data_range = X.amax() - self.data_min",
     checks.check_min_max_transform, r"over all entries instead of per feature"),
    ("min_max_scaler",
     "torch.where(data_range == 0, torch.ones_like(data_range), data_range)", "data_range",
     checks.check_min_max_edge_cases, r"column 1 of X is constant.*returned nan.*division by zero"),
    ("min_max_scaler",
     "return (X - low) / (high - low) * self.data_range + self.data_min",
     "return X * self.data_range + self.data_min",
     checks.check_min_max_inverse, r"inverse_transform ignores feature_range"),
    ("min_max_scaler",
     "return (X - self.data_min) / self.data_range * (high - low) + low",
     "return ((X - self.data_min) / self.data_range * (high - low) + low).float()",
     checks.check_min_max_transform, r"returned dtype torch.float32, expected torch.float64"),
    ("min_max_scaler",
     "return (X - self.data_min) / self.data_range * (high - low) + low",
     "X -= self.data_min\n        return X / self.data_range * (high - low) + low",
     checks.check_min_max_transform, r"modified its input in place"),
    ("min_max_scaler", "        return self\n", "\n",
     checks.check_min_max_transform, r"fit\(X_train\) returned NoneType; it must return self"),
    ("min_max_scaler",
     "if X.shape[1] != self.data_min.shape[0]:\n            raise ValueError(f\"X has {X.shape[1]} features, but the scaler was fitted \"\n"
     "                             f\"with {self.data_min.shape[0]} features\")\n        low, high = self.feature_range\n        return (X - self.data_min)",
     "low, high = self.feature_range\n        return (X - self.data_min)",
     checks.check_min_max_edge_cases, r"transform on 5 features after fit on 3 raised RuntimeError.*should raise ValueError"),
    ("min_max_scaler",
     "raise RuntimeError(\"MinMaxScaler is not fitted yet: call fit(X_train) first\")\n        if X.shape[1] != self.data_min.shape[0]:\n            raise ValueError(f\"X has {X.shape[1]} features, but the scaler was fitted \"\n                             f\"with {self.data_min.shape[0]} features\")\n        low, high = self.feature_range\n        return (X - self.data_min)",
     "return X\n        low, high = self.feature_range\n        return (X - self.data_min)",
     checks.check_min_max_edge_cases, r"before fit returned a Tensor instead of raising"),
    ("standard_scaler", "X.std(dim=0, correction=0)", "X.std(dim=0)",
     checks.check_standard_transform, r"Likely mistake: you use the unbiased standard deviation"),
    ("standard_scaler", "return (X - self.mean) / self.scale",
     "return (X - X.mean(dim=0)) / X.std(dim=0, correction=0)",
     checks.check_standard_transform, r"transform recomputes the mean and standard deviation"),
    ("standard_scaler", "return (X - self.mean) / self.scale", "return (X - self.mean) / self.scale ** 2",
     checks.check_standard_transform, r"divide by the variance instead of the standard deviation"),
    ("standard_scaler", "torch.where(std == 0, torch.ones_like(std), std)", "std",
     checks.check_standard_edge_cases, r"returned nan"),
    ("standard_scaler", "return X * self.scale + self.mean", "return X * self.scale",
     checks.check_standard_inverse, r"inverse_transform forgets to add back the mean"),
    ("standard_scaler", "return X * self.scale + self.mean", "return (X + self.mean) * self.scale",
     checks.check_standard_inverse, r"adds the mean before multiplying"),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cell, old, new, check_fn, pattern", MISTAKES,
                         ids=[f"{m[0]}-{m[3].__name__}-{i}" for i, m in enumerate(MISTAKES)])
def test_each_mistake_fails_its_check_with_a_teaching_message(scaling_solution, cell, old, new,
                                                               check_fn, pattern, seed):
    namespace = with_mistake(scaling_solution, cell, (old, new))
    cls = namespace["MinMaxScaler" if cell == "min_max_scaler" else "StandardScaler"]
    with pytest.raises(CheckFailure, match=pattern) as info:
        check_fn(cls, seed=seed)
    assert isinstance(info.value, AssertionError)  # nbgrader counts AssertionErrors as failures
