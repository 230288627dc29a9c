"""Fairness of the ``scaling`` assignment: a correct scaler written in another style than
the instructor's scores every point of every visible *and* hidden check.

Each row of :data:`STYLES` is a student's correct answer to one answer cell of
``solutions/scaling/scaling.ipynb`` (``min_max_scaler`` or ``standard_scaler``), written
the way students write it: float64 inside and cast back, ``torch.var_mean`` /
``torch.std_mean``, ``X.max(0).values`` or ``amax``, ``unbiased=False`` instead of
``correction=0``, ``(X - mean) * torch.rsqrt(var)``, scikit-learn's ``X * scale_ + min_``,
a loop with ``±inf`` sentinels, ``torch.lerp``, statistics kept as ``(1, D)``, an
``AttributeError`` before ``fit``... The test runs the answer (with the solution's other
cells) through every autograded cell of the notebook, hidden tests included, as nbgrader
would, and asserts that each cell scores its full points; then it calls the checks of
:mod:`coursekit.grading.scaling` directly with the hidden tests' arguments and more seeds,
so that a style does not pass by the luck of one seed.
"""
from __future__ import annotations

import ast
import json
import re

import pytest
import torch

from coursekit.grading import scaling as checks
from conftest import ROOT, code_cells, graded_cells, run_cell

pytestmark = pytest.mark.slow   # see pyproject.toml's markers: `make test-fast` leaves these out

NOTEBOOK = ROOT / "solutions" / "scaling" / "scaling.ipynb"


# --- running the notebook's autograded cells on a student's code ----------------------------

def student_namespace(answers: dict[str, str], style: str) -> dict:
    """A student's kernel: the imports cell, then the answer cells, the solution's except
    ``answers`` (``{grade_id: source}``)."""
    namespace: dict = {}
    for cell in code_cells("scaling"):
        meta = cell["metadata"].get("nbgrader", {})
        grade_id = meta.get("grade_id")
        if grade_id == "imports" or meta.get("solution"):
            run_cell(answers.get(grade_id, "".join(cell["source"])), namespace, f"<{style}: cell {grade_id}>")
    return namespace


def answer_cells() -> list[str]:
    return [c["metadata"]["nbgrader"]["grade_id"] for c in code_cells("scaling")
            if c["metadata"].get("nbgrader", {}).get("solution")]


# --- the styles: MinMaxScaler ----------------------------------------------------------------

MIN_MAX_FLOAT64 = '''
class MinMaxScaler:
    """float64 inside and cast back; X.min(0).values / X.max(0).values; the range patched
    in place; a boolean flag for "fitted"."""

    def __init__(self, feature_range=(0.0, 1.0)):
        if feature_range[0] >= feature_range[1]:
            raise ValueError(f"need min < max, got {feature_range}")
        self.feature_range = feature_range
        self.fitted = False

    def fit(self, X):
        X64 = X.double()
        self.lo = X64.min(dim=0).values
        self.span = X64.max(dim=0).values - self.lo
        self.span[self.span == 0] = 1.0
        self.fitted = True
        return self

    def _check(self, X):
        if not self.fitted:
            raise RuntimeError("fit the scaler first")
        if X.shape[1] != len(self.lo):
            raise ValueError(f"expected {len(self.lo)} features, got {X.shape[1]}")

    def transform(self, X):
        self._check(X)
        a, b = self.feature_range
        return ((X.double() - self.lo) / self.span * (b - a) + a).to(X.dtype)

    def inverse_transform(self, X):
        self._check(X)
        a, b = self.feature_range
        return ((X.double() - a) / (b - a) * self.span + self.lo).to(X.dtype)

    def fit_transform(self, X):
        return self.fit(X).transform(X)
'''

MIN_MAX_SKLEARN_FORM = '''
class MinMaxScaler:
    """scikit-learn's attributes and form, X * scale_ + min_; amin/amax; masked_fill;
    AttributeError before fit."""

    def __init__(self, feature_range=(0.0, 1.0)):
        low, high = feature_range
        if not low < high:
            raise ValueError("feature_range must be increasing")
        self.feature_range = feature_range

    def fit(self, X):
        low, high = self.feature_range
        self.data_min_ = torch.amin(X, dim=0)
        self.data_max_ = torch.amax(X, dim=0)
        data_range = self.data_max_ - self.data_min_
        data_range = data_range.masked_fill(data_range == 0, 1.0)
        self.scale_ = (high - low) / data_range
        self.min_ = low - self.data_min_ * self.scale_
        return self

    def _features(self, X):
        if X.shape[1] != self.scale_.shape[0]:
            raise ValueError(f"X has {X.shape[1]} features, expected {self.scale_.shape[0]}")

    def transform(self, X):
        self._features(X)
        return X * self.scale_ + self.min_

    def inverse_transform(self, X):
        self._features(X)
        return (X - self.min_) / self.scale_

    def fit_transform(self, X):
        return self.fit(X).transform(X)
'''

MIN_MAX_LOOP_SENTINELS = '''
class MinMaxScaler:
    """The minimum and maximum in a loop over the rows, from +-inf sentinels; keepdim-style
    (1, D) statistics; torch.where with a Python scalar."""

    def __init__(self, feature_range=(0.0, 1.0)):
        self.low, self.high = float(feature_range[0]), float(feature_range[1])
        if self.low >= self.high:
            raise ValueError(f"feature_range {feature_range}: min must be below max")
        self.lo = None

    def fit(self, X):
        lo = torch.full((1, X.shape[1]), float("inf"), dtype=X.dtype)
        hi = torch.full((1, X.shape[1]), float("-inf"), dtype=X.dtype)
        for row in X:
            lo = torch.minimum(lo, row)
            hi = torch.maximum(hi, row)
        self.lo = lo
        self.span = torch.where(hi - lo == 0, 1.0, hi - lo)
        return self

    def _check(self, X):
        if self.lo is None:
            raise RuntimeError("not fitted")
        if X.shape[1] != self.lo.shape[1]:
            raise ValueError(f"fitted on {self.lo.shape[1]} features, X has {X.shape[1]}")

    def transform(self, X):
        self._check(X)
        return self.low + (self.high - self.low) * (X - self.lo) / self.span

    def inverse_transform(self, X):
        self._check(X)
        return self.lo + (X - self.low) * self.span / (self.high - self.low)

    def fit_transform(self, X):
        return self.fit(X).transform(X)
'''

MIN_MAX_LERP = '''
class MinMaxScaler:
    """torch.lerp both ways; the fraction of the range computed first."""

    def __init__(self, feature_range=(0.0, 1.0)):
        a, b = feature_range
        if a >= b:
            raise ValueError(f"feature_range must satisfy min < max, got {feature_range}")
        self.a, self.b = float(a), float(b)

    def fit(self, X):
        self.lo, self.hi = X.amin(0), X.amax(0)
        span = self.hi - self.lo
        self.span = torch.where(span > 0, span, torch.ones_like(span))
        return self

    def _fitted(self, X):
        if not hasattr(self, "lo"):
            raise RuntimeError("call fit before transform")
        if X.shape[-1] != self.lo.numel():
            raise ValueError(f"X has {X.shape[-1]} features instead of {self.lo.numel()}")

    def transform(self, X):
        self._fitted(X)
        t = (X - self.lo) / self.span                  # fraction of the training range
        return torch.lerp(torch.full_like(t, self.a), torch.full_like(t, self.b), t)

    def inverse_transform(self, X):
        self._fitted(X)
        t = (X - self.a) / (self.b - self.a)
        return torch.lerp(self.lo.expand_as(t), (self.lo + self.span).expand_as(t), t)

    def fit_transform(self, X):
        return self.fit(X).transform(X)
'''

# --- the styles: StandardScaler --------------------------------------------------------------

STANDARD_FLOAT64 = '''
class StandardScaler:
    """float64 inside and cast back; the variance written out; std patched in place."""

    def __init__(self):
        self.mean = None

    def fit(self, X):
        X64 = X.to(torch.float64)
        self.mean = X64.sum(dim=0) / X64.shape[0]
        self.std = (((X64 - self.mean) ** 2).sum(dim=0) / X64.shape[0]).sqrt()
        self.std[self.std == 0] = 1.0
        return self

    def _check(self, X):
        if self.mean is None:
            raise RuntimeError("fit first")
        if X.shape[1] != self.mean.shape[0]:
            raise ValueError(f"X has {X.shape[1]} features, but fit saw {self.mean.shape[0]}")

    def transform(self, X):
        self._check(X)
        return ((X.double() - self.mean) / self.std).to(X.dtype)

    def inverse_transform(self, X):
        self._check(X)
        return (X.double() * self.std + self.mean).to(X.dtype)

    def fit_transform(self, X):
        return self.fit(X).transform(X)
'''

STANDARD_VAR_MEAN_RSQRT = '''
class StandardScaler:
    """torch.var_mean with correction=0, the variance kept, (X - mean) * rsqrt(var);
    AttributeError before fit."""

    def fit(self, X):
        var, self.mean_ = torch.var_mean(X, dim=0, correction=0)
        self.var_ = torch.where(var == 0, torch.ones_like(var), var)
        return self

    def _check(self, X):
        if X.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"{X.shape[1]} features given, {self.mean_.shape[0]} expected")

    def transform(self, X):
        self._check(X)
        return (X - self.mean_) * torch.rsqrt(self.var_)

    def inverse_transform(self, X):
        self._check(X)
        return X * torch.sqrt(self.var_) + self.mean_

    def fit_transform(self, X):
        return self.fit(X).transform(X)
'''

STANDARD_STD_MEAN_UNBIASED = '''
class StandardScaler:
    """torch.std_mean with unbiased=False (the older spelling of correction=0); keepdim
    statistics of shape (1, D); clone, then patch the zeros."""

    def __init__(self):
        self.fitted = False

    def fit(self, X):
        std, self.mu = torch.std_mean(X, dim=0, unbiased=False, keepdim=True)
        self.sigma = std.clone()
        self.sigma[std == 0] = 1
        self.fitted = True
        return self

    def _check(self, X):
        if not self.fitted:
            raise RuntimeError("StandardScaler: call fit(X_train) first")
        if X.shape[1] != self.mu.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features, but the scaler was fitted with "
                             f"{self.mu.shape[1]} features")

    def transform(self, X):
        self._check(X)
        return (X - self.mu) / self.sigma

    def inverse_transform(self, X):
        self._check(X)
        return self.mu + X * self.sigma

    def fit_transform(self, X):
        return self.fit(X).transform(X)
'''

STANDARD_VAR_UNBIASED_FALSE = '''
class StandardScaler:
    """X.var(unbiased=False).sqrt(); a divide-by-reciprocal; 1 for a constant feature by
    masked_fill."""

    def __init__(self):
        self.mean = None

    def fit(self, X):
        self.mean = X.mean(0)
        std = X.var(0, unbiased=False).sqrt()
        self.scale = std.masked_fill(std == 0, 1.0)
        self.inv_scale = 1.0 / self.scale
        return self

    def _check(self, X):
        if self.mean is None:
            raise RuntimeError("StandardScaler is not fitted")
        if X.shape[1] != len(self.mean):
            raise ValueError(f"expected {len(self.mean)} features, got {X.shape[1]}")

    def transform(self, X):
        self._check(X)
        return (X - self.mean) * self.inv_scale

    def inverse_transform(self, X):
        self._check(X)
        return X / self.inv_scale + self.mean

    def fit_transform(self, X):
        return self.fit(X).transform(X)
'''

STYLES = [
    ("min-max float64 inside, max(0).values", {"min_max_scaler": MIN_MAX_FLOAT64}),
    ("min-max sklearn form X*scale_+min_, amin/amax", {"min_max_scaler": MIN_MAX_SKLEARN_FORM}),
    ("min-max loop with +-inf sentinels, (1, D) stats", {"min_max_scaler": MIN_MAX_LOOP_SENTINELS}),
    ("min-max lerp", {"min_max_scaler": MIN_MAX_LERP}),
    ("standard float64 inside, variance written out", {"standard_scaler": STANDARD_FLOAT64}),
    ("standard var_mean correction=0, rsqrt", {"standard_scaler": STANDARD_VAR_MEAN_RSQRT}),
    ("standard std_mean unbiased=False, keepdim", {"standard_scaler": STANDARD_STD_MEAN_UNBIASED}),
    ("standard var(unbiased=False), reciprocal", {"standard_scaler": STANDARD_VAR_UNBIASED_FALSE}),
]
IDS = [style for style, _ in STYLES]

_PART = {"min_max_scaler": "min_max", "standard_scaler": "standard"}


def _cells_of(answers: dict[str, str]):
    """The graded cells that test the answered classes."""
    parts = {_PART[cell] for cell in answers}
    return [(gid, src, pts) for gid, src, pts in graded_cells("scaling") if any(part in gid for part in parts)]


@pytest.mark.parametrize("style, answers", STYLES, ids=IDS)
def test_a_correct_answer_in_another_style_scores_every_point(style, answers):
    """Every autograded cell of the answered part, visible and hidden, scores its full points."""
    namespace = student_namespace(answers, style)
    cells = _cells_of(answers)
    assert len(cells) == 4 and any("### BEGIN HIDDEN TESTS" in src for _, src, _ in cells)
    for grade_id, source, points in cells:
        got = run_cell(source, namespace, f"<{style}: test cell {grade_id}>")
        assert got == points, f"{style}: cell {grade_id} scored {got!r} of {points}"


def _hidden_calls() -> list[tuple[str, dict]]:
    """The check calls of the hidden test cells, with their keyword arguments (the seeds,
    shapes, dtypes and feature ranges the hidden tests use), read from the notebook."""
    calls = []
    for grade_id, source, _ in graded_cells("scaling"):
        if "### BEGIN HIDDEN TESTS" not in source:
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "").startswith("check_"):
                kwargs = {kw.arg: eval(compile(ast.Expression(kw.value), "<hidden>", "eval"),
                                       {"torch": torch})
                          for kw in node.keywords if kw.arg != "points"}
                calls.append((node.func.id, kwargs))
    return calls


def test_the_hidden_calls_are_found():
    names = [name for name, _ in _hidden_calls()]
    assert sorted(names) == sorted(checks.__all__), names


@pytest.mark.parametrize("seed", [0, 1, 7, 2718, 31415])
@pytest.mark.parametrize("style, answers", STYLES, ids=IDS)
def test_every_style_passes_the_hidden_checks_with_other_seeds(style, answers, seed):
    """The hidden tests' calls, made directly, with their arguments but other seeds."""
    namespace = student_namespace(answers, style)
    part = _PART[next(iter(answers))]
    cls = namespace["MinMaxScaler" if part == "min_max" else "StandardScaler"]
    for name, kwargs in _hidden_calls():
        if name.startswith(f"check_{part}_"):
            assert getattr(checks, name)(cls, **{**kwargs, "seed": seed}, points=1) == 1.0, name


def test_the_table_answers_every_cell():
    answered = {cell for _, answers in STYLES for cell in answers}
    assert set(answer_cells()) == answered
    assert all(sum(cell in answers for _, answers in STYLES) >= 3 for cell in answered)


def test_the_solution_itself_scores_every_point():
    namespace = student_namespace({}, "solution")
    for grade_id, source, points in graded_cells("scaling"):
        assert run_cell(source, namespace, f"<solution: test cell {grade_id}>") == points, grade_id


STANDARD_ONE_PASS = STANDARD_VAR_UNBIASED_FALSE.replace(
    "std = X.var(0, unbiased=False).sqrt()",
    "std = ((X * X).mean(0) - self.mean ** 2).clamp_min(0).sqrt()")


def test_the_one_pass_variance_is_not_a_style_but_a_float32_mistake_that_is_explained():
    """mean(x**2) - mean(x)**2 is right on paper but cancels catastrophically in float32 on
    the checks' data (means large compared to spreads); the notebook says so, and the
    failure names it. In float64 it passes."""
    assert STANDARD_ONE_PASS != STANDARD_VAR_UNBIASED_FALSE
    cls = student_namespace({"standard_scaler": STANDARD_ONE_PASS}, "one pass")["StandardScaler"]
    with pytest.raises(checks.CheckFailure, match=r"Likely mistake: you compute the variance in one pass"):
        checks.check_standard_transform(cls)
    assert checks.check_standard_transform(cls, dtypes=[torch.float64]) == 1.0


def test_the_notebook_states_what_the_checks_check():
    """Every requirement the (hidden) checks enforce is written in the assignment's text."""
    nb = json.loads(NOTEBOOK.read_text())
    text = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    text = re.sub(r"\s+", " ", text)
    for statement in ["**returns `self`**", "keeps the input's dtype", "input is not modified",
                      "constant feature", "With a single sample in `fit`", "a single sample included",
                      "before `fit` raises an error", "`ValueError` with a message naming both counts",
                      "population", r"not as $\overline{x^2} - \mu^2$", "statistics come from `fit` only",
                      "float32 and float64"]:
        assert statement in text, f"the notebook does not state: {statement}"
