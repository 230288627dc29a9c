"""coursekit.scaling judged by scikit-learn's own tests.

scikit-learn ships the tests of its scalers (``sklearn/preprocessing/tests/test_data.py``
and ``test_common.py``). Here they run against coursekit: the names ``StandardScaler``,
``MinMaxScaler``, ``scale`` and ``minmax_scale`` of those test modules are replaced, for
the duration of one test, by thin numpy <-> torch adapters around
:class:`coursekit.scaling.StandardScaler` and :class:`coursekit.scaling.MinMaxScaler`, and
scikit-learn's test function is called with its own parameter values (those that apply:
dense input, no sample weights).

Every test function of ``test_data.py`` whose name mentions a scaler, ``scale`` or
``minmax`` is either run (:data:`RUN`) or listed with the reason it cannot apply
(:data:`NOT_APPLICABLE`); ``test_every_scaler_test_is_run_or_explained`` keeps it so when
scikit-learn adds tests.
"""
from __future__ import annotations

import inspect
import itertools
import re
import warnings

import numpy as np
import pytest
import torch

from sklearn import preprocessing as skp
from sklearn.base import BaseEstimator
from sklearn.preprocessing.tests import test_common as sk_common
from sklearn.preprocessing.tests import test_data as sk_data

from coursekit import scaling


# --- the adapter: scikit-learn's interface (numpy in, numpy out) around coursekit ------------

def _to_torch(X) -> torch.Tensor:
    """A numpy array or a nested list as a tensor, sharing memory when possible (so that a
    scaler that modified its input would be caught by the tests that check the input)."""
    array = np.asarray(X)
    if not array.flags.writeable or any(s < 0 for s in array.strides):
        array = array.copy()
    return torch.from_numpy(array)


def _to_numpy(result: torch.Tensor, X, copy: bool) -> np.ndarray:
    """The result as numpy. scikit-learn's ``copy=False`` means "overwrite X when you can":
    coursekit never modifies its input, so the adapter writes the result into the caller's
    array itself (that is what the tests asserting ``X_scaled is X`` observe)."""
    out = result.numpy()
    if not copy and isinstance(X, np.ndarray) and X.dtype == out.dtype and X.flags.writeable:
        X[...] = out
        return X
    return out


def _numpy(t):
    if t is None or isinstance(t, int):
        return t
    return t.numpy()


class StandardScaler(BaseEstimator):
    """``sklearn.preprocessing.StandardScaler``'s interface around coursekit's."""

    def __init__(self, *, copy=True, with_mean=True, with_std=True):
        self.copy = copy
        self.with_mean = with_mean
        self.with_std = with_std

    def fit(self, X, y=None, sample_weight=None):
        if sample_weight is not None:
            raise NotImplementedError("coursekit's StandardScaler has no sample_weight")
        self.scaler_ = scaling.StandardScaler(with_mean=self.with_mean, with_std=self.with_std)
        self.scaler_.fit(_to_torch(X))
        for name in ("mean_", "var_", "scale_", "n_samples_seen_"):
            setattr(self, name, _numpy(getattr(self.scaler_, name)))
        self.n_features_in_ = self.scaler_.n_features_in_
        return self

    def transform(self, X, copy=None):
        copy = self.copy if copy is None else copy
        return _to_numpy(self.scaler_.transform(_to_torch(X)), X, copy)

    def inverse_transform(self, X, copy=None):
        copy = self.copy if copy is None else copy
        return _to_numpy(self.scaler_.inverse_transform(_to_torch(X)), X, copy)

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)


class MinMaxScaler(BaseEstimator):
    """``sklearn.preprocessing.MinMaxScaler``'s interface around coursekit's. As in
    scikit-learn, an invalid ``feature_range`` is reported by ``fit``."""

    def __init__(self, feature_range=(0, 1), *, copy=True, clip=False):
        self.feature_range = feature_range
        self.copy = copy
        self.clip = clip

    def fit(self, X, y=None):
        self.scaler_ = scaling.MinMaxScaler(self.feature_range, clip=self.clip).fit(_to_torch(X))
        for name in ("data_min_", "data_max_", "data_range_", "scale_", "min_", "n_samples_seen_"):
            setattr(self, name, _numpy(getattr(self.scaler_, name)))
        self.n_features_in_ = self.scaler_.n_features_in_
        return self

    def transform(self, X):
        return _to_numpy(self.scaler_.transform(_to_torch(X)), X, self.copy)

    def inverse_transform(self, X):
        return _to_numpy(self.scaler_.inverse_transform(_to_torch(X)), X, self.copy)

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)


def _function(make_scaler):
    """scikit-learn's function form (``scale``, ``minmax_scale``): 1-D input is one feature,
    ``axis=1`` scales rows."""
    def function(X, *, axis=0, copy=True, **options):
        array = np.asarray(X)
        if array.ndim == 1:
            array = array.reshape(-1, 1)
        if axis == 1:
            array = array.T
        result = make_scaler(**options).fit_transform(array)
        if axis == 1:
            result = result.T
        return result.reshape(np.shape(X)) if np.ndim(X) == 1 else result
    return function


scale = _function(StandardScaler)


def minmax_scale(X, feature_range=(0, 1), *, axis=0, copy=True):
    return _function(MinMaxScaler)(X, axis=axis, copy=copy, feature_range=feature_range)


ADAPTERS = {"StandardScaler": StandardScaler, "MinMaxScaler": MinMaxScaler,
            "scale": scale, "minmax_scale": minmax_scale}


# --- which of scikit-learn's tests run, with which of its parameters -------------------------

def _is_sklearn_scaler(value) -> bool:
    return isinstance(value, (skp.StandardScaler, skp.MinMaxScaler))


def _dense_unweighted(params: dict) -> bool:
    """The parametrizations that apply: dense input, no sample weights, and only the
    estimators coursekit has (not scikit-learn's RobustScaler, MaxAbsScaler...)."""
    if params.get("sparse_container") is not None:
        return False
    if params.get("add_sample_weight") or params.get("sample_weight") is not None:
        return False
    estimator = params.get("scaler", params.get("est"))
    return estimator is None or _is_sklearn_scaler(estimator)


def _with_adapters(params: dict) -> dict:
    """Replace an instance of scikit-learn's scaler (a parameter value) by the adapter with
    the same parameters, and scikit-learn's scaling functions by the adapter's."""
    out = {}
    for name, value in params.items():
        if name == "support_sparse":  # test_missing_value_handling: run its dense part only
            value = False
        if _is_sklearn_scaler(value):
            value = ADAPTERS[type(value).__name__](**value.get_params())
        elif value is skp.scale or value is skp.minmax_scale:
            value = ADAPTERS[value.__name__]
        out[name] = value
    return out


def _parametrizations(fn) -> list[dict]:
    """Every combination of the test's ``pytest.mark.parametrize`` values."""
    axes = []
    for mark in getattr(fn, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        names, values = mark.args[0], mark.args[1]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        combos = []
        for value in values:
            if type(value).__name__ == "ParameterSet":  # a pytest.param(...)
                value = value.values
            combos.append(dict(zip(names, (value,) if len(names) == 1 else value)))
        axes.append(combos)
    return [dict(itertools.chain.from_iterable(d.items() for d in combo))
            for combo in itertools.product(*axes)]


def _param_id(params: dict) -> str:
    def show(value):
        if isinstance(value, BaseEstimator):
            return repr(value)
        return getattr(value, "__name__", None) or repr(value)  # dtypes, functions
    shown = {k: v for k, v in params.items()
             if k not in ("sparse_container", "add_sample_weight", "sample_weight", "omit_kwargs")}
    return ",".join(f"{k}={show(v)}" for k, v in shown.items())


# scikit-learn's tests that run against coursekit, {name: module}, each with those of its
# parametrizations that apply (see _dense_unweighted).
RUN = {
    # test_data.py, names that mention a scaler
    "test_standard_scaler_1d": sk_data,
    "test_standard_scaler_constant_features": sk_data,
    "test_standard_scaler_near_constant_features": sk_data,
    "test_scale_1d": sk_data,
    "test_scaler_2d_arrays": sk_data,
    "test_scaler_float16_overflow": sk_data,
    "test_min_max_scaler_iris": sk_data,
    "test_min_max_scaler_zero_variance_features": sk_data,
    "test_minmax_scale_axis1": sk_data,
    "test_min_max_scaler_1d": sk_data,
    "test_scaler_n_samples_seen_with_nan": sk_data,
    "test_scale_input_finiteness_validation": sk_data,
    "test_minmax_scaler_clip": sk_data,
    "test_standard_scaler_raise_error_for_1d_input": sk_data,
    # test_data.py, other tests of these scalers
    "test_fit_transform": sk_data,
    "test_fit_cold_start": sk_data,
    # test_common.py: missing values (NaN ignored by fit, kept by transform)
    "test_missing_value_handling": sk_common,
}

_SPARSE = "sparse input (scipy.sparse): coursekit's scalers take dense torch tensors"
_PARTIAL = "partial_fit (incremental fitting): coursekit's scalers fit in one call"
_WEIGHTS = "sample_weight: coursekit's StandardScaler has no sample weights"
_ARRAY_API = "scikit-learn's array API dispatch (config_context(array_api_dispatch=True))"
_NOT_IN_COURSEKIT = "{}: coursekit has no such scaler"

NOT_APPLICABLE = {
    "test_standard_scaler_dtype":
        "deliberate difference: it asserts mean_ and scale_ are float64 for float32/float16 "
        "input; coursekit accumulates in float64 too but stores the fitted attributes in the "
        "input's dtype (torch ops do not mix dtypes); the kept output dtype is checked by "
        "test_dtype_of_results_and_attributes below",
    "test_standard_scaler_numerical_stability":
        "asserts the UserWarnings that sklearn's scale() function raises after its second "
        "centring pass; coursekit's scalers have no such pass and warn nothing (its values "
        "are checked by test_numerically_hard_constants below)",
    "test_handle_zeros_in_scale": "tests sklearn's private helper _handle_zeros_in_scale "
                                  "(its rule is checked through test_min_max_scaler_zero_variance_features)",
    "test_standard_scaler_sample_weight": _WEIGHTS,
    "test_standard_scaler_sample_weight_array_api": _WEIGHTS + "; " + _ARRAY_API,
    "test_standard_scaler_array_api_compliance": _ARRAY_API,
    "test_standard_scaler_callback_support": "scikit-learn's callback API",
    "test_minmax_scaler_partial_fit": _PARTIAL,
    "test_standard_scaler_partial_fit": _PARTIAL,
    "test_standard_scaler_partial_fit_numerical_stability": _PARTIAL + "; " + _SPARSE,
    "test_standard_scaler_transform_with_partial_fit": _PARTIAL,
    "test_standard_scaler_sparse_partial_fit_finite_variance": _PARTIAL + "; " + _SPARSE,
    "test_scaler_without_centering": _SPARSE + " (every parametrization compares with a sparse "
                                     "matrix; the dense case is test_without_mean_or_std below)",
    "test_scaler_return_identity": _SPARSE + " (dense case: test_without_mean_or_std below)",
    "test_scaler_int": _SPARSE + "; integer input: coursekit requires floating tensors",
    "test_scaler_without_copy": _SPARSE + " (every parametrization); coursekit never "
                                "modifies its input (test_input_is_not_modified)",
    "test_scale_sparse_with_mean_raise_exception": _SPARSE,
    "test_scale_function_without_centering": _SPARSE,
    "test_maxabs_scaler_1d": _NOT_IN_COURSEKIT.format("MaxAbsScaler"),
    "test_maxabs_scaler_clip": _NOT_IN_COURSEKIT.format("MaxAbsScaler"),
    "test_maxabs_scaler_large_negative_value": _NOT_IN_COURSEKIT.format("MaxAbsScaler"),
    "test_maxabs_scaler_partial_fit": _NOT_IN_COURSEKIT.format("MaxAbsScaler"),
    "test_maxabs_scaler_transform_one_row_csr": _NOT_IN_COURSEKIT.format("MaxAbsScaler"),
    "test_maxabs_scaler_zero_variance_features": _NOT_IN_COURSEKIT.format("MaxAbsScaler"),
    "test_robust_scale_1d_array": _NOT_IN_COURSEKIT.format("RobustScaler"),
    "test_robust_scale_axis1": _NOT_IN_COURSEKIT.format("RobustScaler"),
    "test_robust_scaler_2d_arrays": _NOT_IN_COURSEKIT.format("RobustScaler"),
    "test_robust_scaler_attributes": _NOT_IN_COURSEKIT.format("RobustScaler"),
    "test_robust_scaler_col_zero_sparse": _NOT_IN_COURSEKIT.format("RobustScaler"),
    "test_robust_scaler_equivalence_dense_sparse": _NOT_IN_COURSEKIT.format("RobustScaler"),
    "test_robust_scaler_error_sparse": _NOT_IN_COURSEKIT.format("RobustScaler"),
    "test_robust_scaler_invalid_range": _NOT_IN_COURSEKIT.format("RobustScaler"),
    "test_robust_scaler_iris": _NOT_IN_COURSEKIT.format("RobustScaler"),
    "test_robust_scaler_iris_quantiles": _NOT_IN_COURSEKIT.format("RobustScaler"),
    "test_robust_scaler_transform_one_row_csr": _NOT_IN_COURSEKIT.format("RobustScaler"),
    "test_robust_scaler_unit_variance": _NOT_IN_COURSEKIT.format("RobustScaler"),
    "test_robust_scaler_zero_variance_features": _NOT_IN_COURSEKIT.format("RobustScaler"),
}

_SCALER_TEST = re.compile(r"scal|minmax")


def _cases():
    for name, module in RUN.items():
        fn = getattr(module, name)
        applicable = [p for p in _parametrizations(fn) if _dense_unweighted(p)]
        for params in applicable:
            shown = _param_id(_with_adapters(params))
            yield pytest.param(module, name, params, id=f"{name}[{shown}]" if params else name)


@pytest.mark.parametrize("module, name, params", list(_cases()))
def test_sklearn(module, name, params, monkeypatch):
    for adapted, replacement in ADAPTERS.items():
        if hasattr(module, adapted):
            monkeypatch.setattr(module, adapted, replacement)
    fn = getattr(module, name)
    fn(**_with_adapters(params))


def test_every_scaler_test_is_run_or_explained():
    """A scikit-learn upgrade that adds or renames a scaler test makes this fail, so that
    someone decides whether it applies."""
    in_module = {name for name, fn in inspect.getmembers(sk_data, inspect.isfunction)
                 if name.startswith("test_") and _SCALER_TEST.search(name)}
    run = {name for name, module in RUN.items() if module is sk_data}
    assert not run & set(NOT_APPLICABLE), "a test is both run and listed as not applicable"
    assert in_module - run - set(NOT_APPLICABLE) == set(), "new scaler tests: run them or explain why not"
    assert set(NOT_APPLICABLE) - in_module == set(), "listed tests that scikit-learn no longer has"
    for name, module in RUN.items():
        assert callable(getattr(module, name, None)), f"{module.__name__} has no {name}"
        assert any(_dense_unweighted(p) for p in _parametrizations(getattr(module, name))), \
            f"{name}: none of its parametrizations applies"


def test_adapter_is_coursekit():
    """The adapters compute nothing: the fitted statistics are coursekit's tensors."""
    X = np.random.RandomState(0).randn(20, 3)
    for adapter, attribute in ((StandardScaler(), "mean_"), (MinMaxScaler(), "data_min_")):
        adapter.fit(X)
        assert isinstance(adapter.scaler_, (scaling.StandardScaler, scaling.MinMaxScaler))
        assert np.shares_memory(getattr(adapter, attribute), getattr(adapter.scaler_, attribute).numpy())
        np.testing.assert_array_equal(adapter.transform(X),
                                      adapter.scaler_.transform(torch.from_numpy(X)).numpy())


# --- the same semantics checked directly, in the dtypes and edge cases that matter ----------

DTYPES = [torch.float16, torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_of_results_and_attributes(dtype):
    """Results and fitted attributes keep the input's dtype (statistics accumulate in float64)."""
    X = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)
    standard, minmax = scaling.StandardScaler().fit(X), scaling.MinMaxScaler().fit(X)
    for t in (standard.mean_, standard.var_, standard.scale_, standard.transform(X),
              standard.inverse_transform(X), minmax.data_min_, minmax.data_max_, minmax.data_range_,
              minmax.scale_, minmax.min_, minmax.transform(X), minmax.inverse_transform(X)):
        assert t.dtype == dtype
    reference = skp.StandardScaler().fit(X.numpy())
    np.testing.assert_allclose(standard.scale_.numpy(), reference.scale_.astype(X.numpy().dtype), rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_low_precision_features_with_large_offset_are_scaled(dtype):
    """float32 mean 300, std 0.5, n = 10^5 (float32's eps would call it constant) and
    scikit-learn's float16 overflow data: the spread survives."""
    g = torch.Generator().manual_seed(0)
    if dtype == torch.float32:
        X = (300 + 0.5 * torch.randn(100_000, 1, generator=g, dtype=torch.float64)).to(dtype)
    else:
        X = torch.from_numpy(np.random.RandomState(0).uniform(5, 10, [200_000, 1]).astype(np.float16))
    expected = skp.StandardScaler().fit(X.numpy())
    ours = scaling.StandardScaler().fit(X)
    torch.testing.assert_close(ours.scale_.double(), torch.from_numpy(expected.scale_), rtol=1e-3, atol=0)
    assert abs(ours.scale_.item() - 1.0) > 0.3  # not treated as constant
    out = ours.transform(X)
    assert torch.isfinite(out).all() and out.dtype == dtype
    torch.testing.assert_close(out.double().std(correction=0), torch.tensor(1.0, dtype=torch.float64),
                               rtol=1e-2, atol=0)


def test_huge_float32_values_do_not_overflow():
    """±1e19 in float32: the variance (1e38) would overflow a float32 accumulator."""
    X = torch.tensor([[1e19, 2.0], [-1e19, 4.0], [1e19, 6.0], [-1e19, 8.0]], dtype=torch.float32)
    ours = scaling.StandardScaler().fit(X)
    reference = skp.StandardScaler().fit(X.numpy())
    torch.testing.assert_close(ours.scale_, torch.from_numpy(reference.scale_).float())
    torch.testing.assert_close(ours.transform(X), torch.from_numpy(reference.transform(X.numpy())))
    torch.testing.assert_close(ours.inverse_transform(ours.transform(X)), X)
    mm = scaling.MinMaxScaler((-1, 1)).fit(X)
    torch.testing.assert_close(mm.transform(X)[:, 0], torch.tensor([1.0, -1.0, 1.0, -1.0]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", ["StandardScaler", "MinMaxScaler"])
def test_nan_is_ignored_by_fit_and_kept_by_transform(cls, dtype):
    nan = float("nan")
    X = torch.tensor([[0, 1, 3], [nan, 6, 10], [5, 4, nan], [8, 0, nan]], dtype=dtype)
    ours = getattr(scaling, cls)().fit(X)
    theirs = getattr(skp, cls)().fit(X.numpy())
    out, expected = ours.transform(X), theirs.transform(X.numpy())
    assert torch.equal(torch.isnan(out), torch.isnan(X))
    tol = dict(rtol=2e-3, atol=2e-3) if dtype == torch.float16 else {}
    torch.testing.assert_close(out, torch.from_numpy(expected), equal_nan=True, **tol)
    back = ours.inverse_transform(out)
    assert torch.equal(torch.isnan(back), torch.isnan(X))
    torch.testing.assert_close(back, X, equal_nan=True, **tol)
    if cls == "StandardScaler":
        assert torch.equal(ours.n_samples_seen_, torch.tensor([3, 4, 2]))
        assert ours.n_samples_seen_.dtype == torch.int64
        # each feature's statistics are those of its observed values
        for j in range(3):
            col = X[:, j][~torch.isnan(X[:, j])]
            torch.testing.assert_close(ours.mean_[j], col.double().mean().to(dtype))
    else:
        assert ours.n_samples_seen_ == 4 and type(ours.n_samples_seen_) is int  # rows, as in scikit-learn


def test_n_samples_seen_is_an_int_without_missing_values():
    X = torch.randn(7, 3)
    assert type(scaling.StandardScaler().fit(X).n_samples_seen_) is int
    assert scaling.StandardScaler().fit(X).n_samples_seen_ == 7
    X[0] = float("nan")  # the same count in every feature: still an int
    assert scaling.StandardScaler().fit(X).n_samples_seen_ == 6


def test_feature_without_any_observed_value_is_nan_as_in_sklearn():
    X = torch.tensor([[float("nan"), 1.0], [float("nan"), 3.0]], dtype=torch.float64)
    for cls in ("StandardScaler", "MinMaxScaler"):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "All-NaN slice"; coursekit is quiet
            expected = getattr(skp, cls)().fit(X.numpy()).transform(X.numpy())
        torch.testing.assert_close(getattr(scaling, cls)().fit(X).transform(X), torch.from_numpy(expected),
                                   equal_nan=True)


@pytest.mark.parametrize("cls", ["StandardScaler", "MinMaxScaler"])
@pytest.mark.parametrize("shape", [(0, 3), (0, 0), (4, 0)])
def test_empty_input_is_a_clear_error(cls, shape):
    with pytest.raises(ValueError) as sk_error:
        getattr(skp, cls)().fit(np.ones(shape))
    assert re.search(r"0 (sample|feature)", str(sk_error.value))
    with pytest.raises(ValueError, match=rf"{cls}.fit needs at least one (sample|feature), got shape "
                                         rf"{re.escape(str(shape))}"):
        getattr(scaling, cls)().fit(torch.ones(shape))
    fitted = getattr(scaling, cls)().fit(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"transform needs at least one sample, got shape \(0, 3\)"):
        fitted.transform(torch.ones(0, 3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_sample_and_constant_features(dtype):
    for X in (torch.tensor([[3.0, -2.0, 0.1]], dtype=dtype),
              torch.full((40, 3), 0.1, dtype=dtype), torch.full((1000, 2), 300.7, dtype=dtype)):
        for cls in ("StandardScaler", "MinMaxScaler"):
            ours, theirs = getattr(scaling, cls)().fit(X), getattr(skp, cls)().fit(X.numpy())
            torch.testing.assert_close(ours.transform(X), torch.from_numpy(theirs.transform(X.numpy())))
            torch.testing.assert_close(ours.scale_, torch.ones_like(ours.scale_))
            torch.testing.assert_close(ours.inverse_transform(ours.transform(X)), X)


def test_numerically_hard_constants():
    """The values of sklearn's test_standard_scaler_numerical_stability: constant features
    that rounding makes look non-constant map to 0."""
    for value, n in ((np.log(1e-5), 8), (np.log(1e-5), 10), (1e-100, 10), (1e100, 10)):
        X = torch.full((n, 1), value, dtype=torch.float64)
        zeros = torch.zeros(n, 1, dtype=torch.float64)
        torch.testing.assert_close(scaling.StandardScaler().fit_transform(X), zeros)
        centred = scaling.StandardScaler(with_std=False).fit_transform(X)
        torch.testing.assert_close(centred, zeros, atol=1e-7 * abs(value), rtol=0)


def test_without_mean_or_std():
    """The dense halves of sklearn's test_scaler_without_centering and test_scaler_return_identity."""
    rng = np.random.RandomState(42)
    X = rng.randn(4, 5)
    X[:, 0] = 0.0
    Xt = torch.from_numpy(X)
    for options in ({"with_mean": False}, {"with_std": False}, {"with_mean": False, "with_std": False}):
        ours, theirs = scaling.StandardScaler(**options).fit(Xt), skp.StandardScaler(**options).fit(X)
        out = ours.transform(Xt)
        assert out is not Xt
        torch.testing.assert_close(out, torch.from_numpy(theirs.transform(X)))
        torch.testing.assert_close(ours.inverse_transform(out), Xt)
        for name in ("mean_", "var_", "scale_"):
            if getattr(theirs, name) is None:
                assert getattr(ours, name) is None
            else:
                torch.testing.assert_close(getattr(ours, name), torch.from_numpy(getattr(theirs, name)))
        assert ours.n_samples_seen_ == 4


@pytest.mark.parametrize("feature_range", [(0, 1), (-10, 10), (2.5, 3.0)])
def test_min_max_clip_and_attributes_match_sklearn(feature_range):
    rng = np.random.RandomState(1)
    X = rng.randn(30, 4) * [1, 10, 100, 0.01] + [0, 5, -50, 3]
    X_new = rng.randn(10, 4) * [3, 30, 300, 0.03] + [0, 5, -50, 3]
    for clip in (False, True):
        ours = scaling.MinMaxScaler(feature_range, clip=clip).fit(torch.from_numpy(X))
        theirs = skp.MinMaxScaler(feature_range=feature_range, clip=clip).fit(X)
        for name in ("data_min_", "data_max_", "data_range_", "scale_", "min_"):
            torch.testing.assert_close(getattr(ours, name), torch.from_numpy(getattr(theirs, name)))
        torch.testing.assert_close(ours.transform(torch.from_numpy(X_new)),
                                   torch.from_numpy(theirs.transform(X_new)))


@pytest.mark.parametrize("bad, pattern", [
    (lambda: scaling.StandardScaler(with_mean="yes"), r"with_mean must be True or False, got 'yes'"),
    (lambda: scaling.StandardScaler(with_std=1), r"with_std must be True or False, got 1"),
    (lambda: scaling.MinMaxScaler(clip=None), r"clip must be True or False, got None"),
])
def test_options_are_validated(bad, pattern):
    with pytest.raises(TypeError, match=pattern):
        bad()


def test_numpy_bools_are_bools():
    assert scaling.StandardScaler(with_mean=np.False_).with_mean is False
    assert scaling.MinMaxScaler(clip=np.True_).clip is True


def test_feature_range_must_be_finite():
    with pytest.raises(ValueError, match=r"feature_range must be finite, got \(0, inf\)"):
        scaling.MinMaxScaler((0, float("inf")))


@pytest.mark.parametrize("method", ["fit", "transform", "inverse_transform"])
def test_infinity_is_rejected_naming_where(method):
    X = torch.ones(3, 2)
    bad = X.clone()
    bad[2, 1] = -float("inf")
    for cls in (scaling.StandardScaler, scaling.MinMaxScaler):
        scaler = cls() if method == "fit" else cls().fit(X)
        with pytest.raises(ValueError, match=r"contains infinity.*X\[2, 1\] = -inf"):
            getattr(scaler, method)(bad)


def test_statistics_follow_the_data_to_its_device_and_dtype():
    """Fitted on float64, applied to float32: the result is float32, like scikit-learn's."""
    X = torch.randn(10, 2, dtype=torch.float64)
    for scaler in (scaling.StandardScaler().fit(X), scaling.MinMaxScaler().fit(X)):
        assert scaler.transform(X.float()).dtype == torch.float32
        assert scaler.inverse_transform(X.float()).dtype == torch.float32
