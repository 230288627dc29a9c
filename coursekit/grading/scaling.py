"""Checks for the ``scaling`` assignment: the student's ``MinMaxScaler`` and ``StandardScaler``.

Each check compares the student's class with :mod:`coursekit.scaling` on seeded random
data whose features have very different scales and offsets, in float32 and float64, and
returns its points (see :mod:`coursekit.grading`). The assignment's test cells call::

    check_min_max_transform(MinMaxScaler, points=3)
    check_standard_edge_cases(StandardScaler, points=2)

and its hidden tests call the same checks with other seeds, shapes and options.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from coursekit import scaling as _reference
from coursekit.grading import CheckFailure, assert_tensor, call, check

__all__ = [
    "check_min_max_transform", "check_min_max_inverse", "check_min_max_edge_cases",
    "check_standard_transform", "check_standard_inverse", "check_standard_edge_cases",
]

DEFAULT_SHAPES = ((20, 3), (7, 1), (64, 10))
DEFAULT_DTYPES = (torch.float32, torch.float64)


# --- data ----------------------------------------------------------------------------------

def _make_data(shape, dtype, gen):
    """A training set whose features differ wildly in scale and offset, and new data from
    a shifted, wider distribution (so its transform leaves the training range)."""
    n, d = shape
    scale = 10 ** (torch.rand(d, generator=gen, dtype=torch.float64) * 4 - 2)   # 0.01 .. 100
    offset = torch.randn(d, generator=gen, dtype=torch.float64) * 10 * scale
    X_train = torch.randn(n, d, generator=gen, dtype=torch.float64) * scale + offset
    X_new = torch.randn(n + 3, d, generator=gen, dtype=torch.float64) * 2 * scale + offset + scale
    return X_train.to(dtype), X_new.to(dtype)


# --- known mistakes, as the wrong results they produce --------------------------------------

def _min_max_mistakes(X_train, X, kwargs):
    low, high = kwargs.get("feature_range", (0.0, 1.0))

    def min_max(stats_from, dim=0):
        lo = stats_from.amin(dim=dim, keepdim=True)
        hi = stats_from.amax(dim=dim, keepdim=True)
        return lo, hi

    lo, hi = min_max(X_train)
    lo_x, hi_x = min_max(X)
    lo_all, hi_all = X_train.min(), X_train.max()
    return {
        "transform recomputes the minimum and maximum from the data it is given. The "
        "statistics must come from fit (the training data) only; transform applies the "
        "stored ones, so new data may land outside the range.":
            (X - lo_x) / (hi_x - lo_x) * (high - low) + low,
        f"the result is in [0, 1] instead of feature_range=({low}, {high}): after "
        "(X - min) / (max - min), stretch by (max_range - min_range) and shift by min_range.":
            (X - lo) / (hi - lo),
        "the minimum and maximum are taken over all entries instead of per feature: "
        "reduce over the samples only (dim=0).":
            (X - lo_all) / (hi_all - lo_all) * (high - low) + low,
        "you divide by the maximum instead of the range (max - min).":
            (X - lo) / hi * (high - low) + low,
    }


def _standard_mistakes(X_train, X, kwargs):
    mean, X_mean = X_train.mean(0), X.mean(0)
    return {
        "you use the unbiased standard deviation (dividing by N - 1, torch.std's default). "
        "StandardScaler uses the population standard deviation (divide by N, correction=0), "
        "like scikit-learn and like batch normalization.":
            (X - mean) / X_train.std(0, correction=1),
        "transform recomputes the mean and standard deviation from the data it is given. "
        "The statistics must come from fit (the training data) only; transform applies the "
        "stored ones.":
            (X - X_mean) / X.std(0, correction=0),
        "you divide by the variance instead of the standard deviation (its square root).":
            (X - mean) / X_train.var(0, correction=0),
        "the statistics are taken over all entries instead of per feature: reduce over the "
        "samples only (dim=0).":
            (X - X_train.mean()) / X_train.std(correction=0),
        "you divide by the standard deviation but forget to subtract the mean.":
            X / X_train.std(0, correction=0),
        "you compute the variance in one pass, as mean(x**2) - mean(x)**2: when a feature's "
        "mean is large compared to its spread, the two terms nearly cancel and float32 loses "
        "most digits. Compute it from the deviations, ((X - mean)**2).mean(dim=0), as in the "
        "formula (or X.var(dim=0, correction=0)).":
            (X - mean) / ((X_train * X_train).mean(0) - mean ** 2).clamp_min(0).sqrt(),
    }


def _min_max_inverse_mistakes(X_train, Z, kwargs):
    low, high = kwargs.get("feature_range", (0.0, 1.0))
    lo, hi = X_train.amin(0), X_train.amax(0)
    return {
        "inverse_transform ignores feature_range: first undo the shift and stretch to "
        f"({low}, {high}), i.e. (Z - min_range) / (max_range - min_range).":
            Z * (hi - lo) + lo,
        "inverse_transform forgets to add back the training minimum.":
            (Z - low) / (high - low) * (hi - lo),
    }


def _standard_inverse_mistakes(X_train, Z, kwargs):
    mean, std = X_train.mean(0), X_train.std(0, correction=0)
    return {
        "inverse_transform multiplies by the variance instead of the standard deviation.":
            Z * std ** 2 + mean,
        "inverse_transform forgets to add back the mean.": Z * std,
        "inverse_transform adds the mean before multiplying: it must multiply by the "
        "standard deviation first, then add the mean.": (Z + mean) * std,
        "inverse_transform uses the unbiased standard deviation (N - 1).":
            Z * X_train.std(0, correction=1) + mean,
    }


@dataclass(frozen=True)
class _Spec:
    name: str
    reference: type
    mistakes: Callable
    inverse_mistakes: Callable
    constant_maps_to: str


_MIN_MAX = _Spec("MinMaxScaler", _reference.MinMaxScaler, _min_max_mistakes,
                 _min_max_inverse_mistakes, "the lower end of feature_range")
_STANDARD = _Spec("StandardScaler", _reference.StandardScaler, _standard_mistakes,
                  _standard_inverse_mistakes, "0")


# --- the generic checks ---------------------------------------------------------------------

def _refuse_reference(student_cls, spec: _Spec) -> None:
    module = getattr(student_cls, "__module__", "") or ""
    is_reference = isinstance(student_cls, type) and issubclass(student_cls, spec.reference)
    if is_reference or module.startswith(("coursekit", "sklearn")):
        raise CheckFailure(f"{spec.name} must be your own class, written in the solution cell; "
                           f"it comes from {module!r}.")


def _magnitude(X_train, X):
    """Per-column size of the numbers a scaler works with, in the training data's units:
    float32 rounding errors of any correct formula are relative to it."""
    return torch.maximum(X_train.abs().amax(0), X.abs().amax(0)).clamp_min(torch.finfo(X.dtype).tiny)


def _spread(X_train):
    spread = X_train.amax(0) - X_train.amin(0)
    return torch.where(spread > 0, spread, torch.ones_like(spread))


def _kwargs_text(kwargs) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _cases(seed, shapes, dtypes, variants):
    gen = torch.Generator().manual_seed(seed)
    for dtype in dtypes:
        for shape in shapes:
            if len(shape) != 2 or min(shape) < 1:
                raise ValueError(f"shapes must be (N, D) pairs with N, D >= 1, got {shape}")
            X_train, X_new = _make_data(shape, dtype, gen)
            for kwargs in variants:
                yield X_train, X_new, kwargs


def _new_fitted(student_cls, spec, kwargs, X_train):
    ctor = f"{spec.name}({_kwargs_text(kwargs)})"
    scaler = call(student_cls, what=ctor, **kwargs)
    returned = call(scaler.fit, X_train.clone(), what=f"{ctor}.fit(X_train)")
    if returned is not scaler:
        raise CheckFailure(f"{ctor}.fit(X_train) returned {type(returned).__name__}; it must "
                           f"return self, so that calls chain: {spec.name}().fit(X).transform(X).")
    return scaler, ctor


def _check_transform(student_cls, spec, seed, shapes, dtypes, variants):
    _refuse_reference(student_cls, spec)
    for X_train, X_new, kwargs in _cases(seed, shapes, dtypes, variants):
        reference = spec.reference(**kwargs).fit(X_train)
        scaler, ctor = _new_fitted(student_cls, spec, kwargs, X_train)
        where = f"(X_train of shape {tuple(X_train.shape)}, {X_train.dtype})"
        for X, name in ((X_train, "X_train"), (X_new, "X_new")):
            X_in = X.clone()
            got = call(scaler.transform, X_in, what=f"transform({name})")
            assert_tensor(got, reference.transform(X), what=f"{ctor}.fit(X_train).transform({name}) {where}",
                          mistakes=spec.mistakes(X_train, X, kwargs),
                          scale=(_magnitude(X_train, X) / _spread(X_train)).clamp_min(1.0))
            if not torch.equal(X_in, X):
                raise CheckFailure(f"transform({name}) modified its input in place; return a new "
                                   f"tensor and leave the caller's data unchanged.")
        fresh = call(student_cls, what=ctor, **kwargs)
        got = call(fresh.fit_transform, X_train.clone(), what=f"{ctor}.fit_transform(X_train)")
        assert_tensor(got, reference.transform(X_train), what=f"{ctor}.fit_transform(X_train) {where}",
                      mistakes=spec.mistakes(X_train, X_train, kwargs),
                      scale=(_magnitude(X_train, X_train) / _spread(X_train)).clamp_min(1.0))


def _check_inverse(student_cls, spec, seed, shapes, dtypes, variants):
    _refuse_reference(student_cls, spec)
    gen = torch.Generator().manual_seed(seed + 1)
    for X_train, X_new, kwargs in _cases(seed, shapes, dtypes, variants):
        reference = spec.reference(**kwargs).fit(X_train)
        scaler, ctor = _new_fitted(student_cls, spec, kwargs, X_train)
        Z = torch.randn(X_new.shape, generator=gen, dtype=torch.float64).to(X_new.dtype)
        got = call(scaler.inverse_transform, Z.clone(), what=f"{ctor}.inverse_transform(Z)")
        expected = reference.inverse_transform(Z)
        assert_tensor(got, expected,
                      what=f"{ctor}.fit(X_train).inverse_transform(Z) (Z of shape {tuple(Z.shape)}, {Z.dtype})",
                      mistakes=spec.inverse_mistakes(X_train, Z, kwargs),
                      scale=_magnitude(X_train, expected))
        round_trip = call(scaler.inverse_transform, reference.transform(X_new),
                          what=f"{ctor}.inverse_transform(transform(X_new))")
        assert_tensor(round_trip, X_new, what=f"{ctor}: inverse_transform(transform(X_new)) "
                      f"should give back X_new", scale=_magnitude(X_train, X_new))


def _check_edge_cases(student_cls, spec, seed, dtypes, variants):
    _refuse_reference(student_cls, spec)
    gen = torch.Generator().manual_seed(seed)
    for dtype in dtypes:
        for kwargs in variants:
            ctor = f"{spec.name}({_kwargs_text(kwargs)})"
            # A constant feature: exactly representable values, so its spread is exactly 0.
            X = torch.randn(12, 3, generator=gen, dtype=torch.float64).to(dtype)
            X[:, 1] = 2.5
            reference = spec.reference(**kwargs).fit(X)
            scaler = call(student_cls, what=ctor, **kwargs)
            got = call(scaler.fit_transform, X.clone(), what=f"{ctor}.fit_transform(X)")
            assert_tensor(got, reference.transform(X),
                          what=f"{ctor}.fit_transform(X) where column 1 of X is constant (2.5)")
            # A single sample: every feature is constant.
            x1 = X[:1].clone()
            got = call(call(student_cls, what=ctor, **kwargs).fit_transform, x1.clone(),
                       what=f"{ctor}.fit_transform(X) with a single sample")
            assert_tensor(got, spec.reference(**kwargs).fit(x1).transform(x1),
                          what=f"{ctor}.fit_transform(X) with one sample, shape {tuple(x1.shape)} "
                               f"(every feature is constant and should map to {spec.constant_maps_to})")

    # transform before fit must raise, not return garbage
    scaler = call(student_cls, what=f"{spec.name}()")
    X = torch.randn(5, 3, generator=gen)
    try:
        result = scaler.transform(X)
    except NotImplementedError:
        raise CheckFailure(f"{spec.name}().transform(X) raised NotImplementedError: implement "
                           f"transform.") from None
    except Exception:  # noqa: BLE001 - any clear error is fine here
        pass
    else:
        raise CheckFailure(f"{spec.name}().transform(X) before fit returned a "
                           f"{type(result).__name__} instead of raising an error. There are no "
                           f"statistics yet: raise e.g. RuntimeError('call fit before transform').")

    # a feature-count mismatch must raise ValueError naming both counts
    for method in ("transform", "inverse_transform"):
        scaler, ctor = _new_fitted(student_cls, spec, {}, torch.randn(6, 3, generator=gen))
        wrong = torch.randn(4, 5, generator=gen)
        try:
            getattr(scaler, method)(wrong)
        except ValueError as e:
            if "3" not in str(e) or "5" not in str(e):
                raise CheckFailure(
                    f"{method} on 5 features after fit on 3 raised ValueError({str(e)!r}); a "
                    f"clear message names both counts, e.g. 'X has 5 features, but the scaler "
                    f"was fitted with 3 features'.") from None
        except NotImplementedError:
            raise CheckFailure(f"{spec.name}.{method} raised NotImplementedError: implement "
                               f"{method}.") from None
        except Exception as e:  # noqa: BLE001
            raise CheckFailure(f"{method} on 5 features after fit on 3 raised "
                               f"{type(e).__name__}({e}); it should raise ValueError naming both "
                               f"counts.") from None
        else:
            raise CheckFailure(f"{method} on data with 5 features after fit on 3 features did "
                               f"not raise; it should raise ValueError naming both counts.")


# --- the public checks ----------------------------------------------------------------------

_RANGES = ((0.0, 1.0), (-1.0, 1.0))


def _variants(feature_ranges):
    return [{}] + [{"feature_range": r} for r in feature_ranges if tuple(r) != (0.0, 1.0)]


@check
def check_min_max_transform(student_cls, *, seed: int = 0,
                            shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
                            dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES,
                            feature_ranges: Sequence[tuple[float, float]] = _RANGES) -> None:
    """``fit``/``transform``/``fit_transform`` of ``MinMaxScaler`` agree with the reference:
    statistics from ``fit`` only, per feature, any ``feature_range``, dtype kept, input untouched."""
    _check_transform(student_cls, _MIN_MAX, seed, shapes, dtypes, _variants(feature_ranges))


@check
def check_min_max_inverse(student_cls, *, seed: int = 0,
                          shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
                          dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES,
                          feature_ranges: Sequence[tuple[float, float]] = _RANGES) -> None:
    """``MinMaxScaler.inverse_transform`` undoes ``transform`` and agrees with the reference."""
    _check_inverse(student_cls, _MIN_MAX, seed, shapes, dtypes, _variants(feature_ranges))


@check
def check_min_max_edge_cases(student_cls, *, seed: int = 0,
                             dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES,
                             feature_ranges: Sequence[tuple[float, float]] = _RANGES) -> None:
    """Constant features and single samples give no NaN; misuse raises clear errors."""
    _check_edge_cases(student_cls, _MIN_MAX, seed, dtypes, _variants(feature_ranges))


@check
def check_standard_transform(student_cls, *, seed: int = 0,
                             shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
                             dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES) -> None:
    """``fit``/``transform``/``fit_transform`` of ``StandardScaler`` agree with the reference:
    population standard deviation, statistics from ``fit`` only, dtype kept, input untouched."""
    _check_transform(student_cls, _STANDARD, seed, shapes, dtypes, [{}])


@check
def check_standard_inverse(student_cls, *, seed: int = 0,
                           shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
                           dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES) -> None:
    """``StandardScaler.inverse_transform`` undoes ``transform`` and agrees with the reference."""
    _check_inverse(student_cls, _STANDARD, seed, shapes, dtypes, [{}])


@check
def check_standard_edge_cases(student_cls, *, seed: int = 0,
                              dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES) -> None:
    """Constant features and single samples give no NaN; misuse raises clear errors."""
    _check_edge_cases(student_cls, _STANDARD, seed, dtypes, [{}])
