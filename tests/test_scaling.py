"""coursekit.scaling against scikit-learn, and its errors."""
import numpy as np
import pytest
import torch
from sklearn import preprocessing

from coursekit.scaling import MinMaxScaler, NotFittedError, StandardScaler


def random_data(seed, n=40, d=5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    scale = 10 ** (torch.rand(d, generator=g, dtype=torch.float64) * 4 - 2)
    offset = torch.randn(d, generator=g, dtype=torch.float64) * 5 * scale
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * scale + offset
    X_new = torch.randn(n // 2, d, generator=g, dtype=torch.float64) * 3 * scale + offset
    return X.to(dtype), X_new.to(dtype)


PAIRS = [
    (lambda: MinMaxScaler(), lambda: preprocessing.MinMaxScaler()),
    (lambda: MinMaxScaler((-1, 1)), lambda: preprocessing.MinMaxScaler((-1, 1))),
    (lambda: MinMaxScaler((2.0, 7.5)), lambda: preprocessing.MinMaxScaler((2.0, 7.5))),
    (lambda: StandardScaler(), lambda: preprocessing.StandardScaler()),
]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("make", PAIRS, ids=["minmax01", "minmax-11", "minmax-2-7.5", "standard"])
def test_parity_with_sklearn_float64(make, seed):
    ours, theirs = make[0](), make[1]()
    X, X_new = random_data(seed)
    X[:, 2] = 3.25  # a constant feature
    theirs.fit(X.numpy())
    assert ours.fit(X) is ours
    for data in (X, X_new):
        torch.testing.assert_close(ours.transform(data), torch.from_numpy(theirs.transform(data.numpy())))
        Z = ours.transform(data)
        torch.testing.assert_close(ours.inverse_transform(Z),
                                   torch.from_numpy(theirs.inverse_transform(Z.numpy())))
        torch.testing.assert_close(ours.inverse_transform(Z), data)
    torch.testing.assert_close(ours.fit_transform(X), torch.from_numpy(theirs.fit_transform(X.numpy())))


@pytest.mark.parametrize("make", PAIRS, ids=["minmax01", "minmax-11", "minmax-2-7.5", "standard"])
def test_parity_with_sklearn_float32_keeps_dtype(make):
    ours, theirs = make[0](), make[1]()
    X, X_new = random_data(7, dtype=torch.float32)
    theirs.fit(X.numpy().astype(np.float64))
    ours.fit(X)
    out = ours.transform(X_new)
    assert out.dtype == torch.float32
    expected = torch.from_numpy(theirs.transform(X_new.numpy().astype(np.float64))).float()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)


def test_statistics_come_from_fit_only():
    X = torch.tensor([[0.0, 10.0], [2.0, 20.0], [4.0, 30.0]])
    scaler = MinMaxScaler().fit(X)
    out = scaler.transform(torch.tensor([[6.0, 0.0]]))
    torch.testing.assert_close(out, torch.tensor([[1.5, -0.5]]))  # outside [0, 1], as it should be
    std = StandardScaler().fit(X)
    torch.testing.assert_close(std.mean_, torch.tensor([2.0, 20.0]))
    torch.testing.assert_close(std.scale_, torch.tensor([(8 / 3) ** 0.5, (200 / 3) ** 0.5]))  # population std


def test_constant_feature_and_single_sample_give_no_nan():
    X = torch.tensor([[1.0, 5.0], [1.0, 7.0], [1.0, 9.0]])
    torch.testing.assert_close(MinMaxScaler((-1, 1)).fit_transform(X)[:, 0], torch.full((3,), -1.0))
    torch.testing.assert_close(StandardScaler().fit_transform(X)[:, 0], torch.zeros(3))
    one = torch.tensor([[3.0, -2.0]])
    torch.testing.assert_close(StandardScaler().fit_transform(one), torch.zeros(1, 2))
    torch.testing.assert_close(MinMaxScaler().fit_transform(one), torch.zeros(1, 2))
    # a constant that is not exactly representable: rounding must not make a huge scale
    Xr = torch.full((50, 1), 0.1, dtype=torch.float64)
    assert torch.isfinite(StandardScaler().fit_transform(Xr)).all()
    torch.testing.assert_close(StandardScaler().fit_transform(Xr), torch.zeros(50, 1, dtype=torch.float64))


def test_input_is_not_modified():
    X, _ = random_data(3)
    before = X.clone()
    for scaler in (MinMaxScaler(), StandardScaler()):
        scaler.fit_transform(X)
        scaler.inverse_transform(X)
    assert torch.equal(X, before)


ERRORS = [
    # (call, exception, message pattern)
    (lambda: MinMaxScaler().transform(torch.ones(2, 2)), NotFittedError, r"not fitted yet: call fit"),
    (lambda: StandardScaler().inverse_transform(torch.ones(2, 2)), NotFittedError, r"before inverse_transform"),
    (lambda: MinMaxScaler().fit(torch.ones(4, 3)).transform(torch.ones(4, 5)), ValueError,
     r"X has 5 features, but MinMaxScaler was fitted with 3 features"),
    (lambda: StandardScaler().fit(torch.ones(4, 3)).inverse_transform(torch.ones(4, 2)), ValueError,
     r"X has 2 features, but StandardScaler was fitted with 3 features"),
    (lambda: MinMaxScaler((1, 0)), ValueError, r"min < max, got \(1, 0\)"),
    (lambda: MinMaxScaler((0, 0)), ValueError, r"min < max"),
    (lambda: MinMaxScaler("ab"), ValueError, r"pair of numbers \(min, max\), got 'ab'"),
    (lambda: StandardScaler().fit(torch.ones(5)), ValueError, r"shape \(N, D\).*got shape \(5,\)"),
    (lambda: StandardScaler().fit(torch.ones(2, 3, 4)), ValueError, r"got shape \(2, 3, 4\)"),
    (lambda: MinMaxScaler().fit(torch.ones(0, 3)), ValueError, r"at least one sample, got shape \(0, 3\)"),
    (lambda: StandardScaler().fit(torch.ones(3, 2, dtype=torch.long)), TypeError, r"floating-point.*torch.int64"),
    (lambda: StandardScaler().fit(np.ones((3, 2))), TypeError, r"torch.Tensor.*got ndarray"),
]


@pytest.mark.parametrize("fn, exc, pattern", ERRORS)
def test_errors(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()


def test_not_fitted_error_is_catchable_like_sklearn():
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
