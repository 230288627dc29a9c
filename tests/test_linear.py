"""coursekit.linear: condition numbers and gradient descent for logistic regression."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression

from coursekit.linear import hessian_condition_number, logistic_regression_gd
from coursekit.scaling import StandardScaler


def test_condition_number_matches_numpy():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1, 3.0]) + 2
    A = np.hstack([np.ones((50, 1)), X.numpy()])
    assert hessian_condition_number(X) == pytest.approx(np.linalg.cond(A.T @ A / 50), rel=1e-8)
    assert hessian_condition_number(X, intercept=False) == pytest.approx(np.linalg.cond(X.numpy().T @ X.numpy()), rel=1e-8)


def test_wine_condition_number_raw_vs_standardized():
    X = torch.as_tensor(load_wine().data)
    raw = hessian_condition_number(X)
    scaled = hessian_condition_number(StandardScaler().fit_transform(X))
    assert 4e8 < raw < 5e8 and 40 < scaled < 50


def test_singular_is_inf():
    X = torch.ones(10, 2, dtype=torch.float64)
    assert hessian_condition_number(X) == float("inf")


def test_gd_converges_to_sklearn_unregularized_solution():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(200, 2, generator=g, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.8 * torch.randn(200, generator=g, dtype=torch.float64) > 0).long()
    run = logistic_regression_gd(X, y, lr=2.0, max_steps=20_000, tol=1e-8)
    assert run.converged and not run.diverged
    assert all(a >= b - 1e-12 for a, b in zip(run.losses, run.losses[1:])), "loss must not increase"
    sk = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(X.numpy(), y.numpy())
    # softmax with two classes: the difference of the two rows is the logistic weight
    torch.testing.assert_close(run.weight[1] - run.weight[0], torch.from_numpy(sk.coef_[0]), rtol=1e-4, atol=1e-5)
    assert run.accuracy(X, y) == pytest.approx(sk.score(X.numpy(), y.numpy()))


def test_gd_diverges_with_too_large_a_step():
    X = torch.tensor([[100.0], [200.0], [300.0], [400.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    run = logistic_regression_gd(X, y, lr=10.0, max_steps=100)
    assert run.diverged and not run.converged


def test_gd_counts_steps_and_respects_max_steps():
    X = torch.randn(30, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    run = logistic_regression_gd(X, y, lr=0.1, max_steps=7, tol=0.0)
    assert run.steps == 7 and len(run.losses) == 8 and not run.converged


@pytest.mark.parametrize("kwargs, pattern", [
    ({"X": torch.ones(3), "y": torch.zeros(3, dtype=torch.long), "lr": 1.0}, r"got shapes \(3,\) and \(3,\)"),
    ({"X": torch.ones(3, 2), "y": torch.zeros(4, dtype=torch.long), "lr": 1.0}, r"got shapes \(3, 2\) and \(4,\)"),
    ({"X": torch.ones(3, 2), "y": torch.zeros(3, dtype=torch.long), "lr": 0.0}, r"lr must be positive, got 0.0"),
])
def test_gd_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        logistic_regression_gd(**kwargs)
