"""Linear models trained by full-batch gradient descent, to see what feature scaling does.

Gradient descent on a quadratic converges at a rate set by the condition number
:math:`\\kappa = \\lambda_{\\max} / \\lambda_{\\min}` of the Hessian: with the largest stable
step :math:`1/\\lambda_{\\max}`, reaching a tolerance takes about :math:`\\kappa \\ln(1/\\epsilon)`
steps. For least squares the Hessian is :math:`X^\\top X / n`; for logistic regression at
:math:`w = 0` it is :math:`X^\\top X / 4n`, the same matrix up to a factor, so the same
:math:`\\kappa`. Feature scaling changes :math:`X`, hence :math:`\\kappa`.

Example::

    >>> kappa = hessian_condition_number(X)                 # intercept column included
    >>> result = logistic_regression_gd(X, y, lr=0.5)
    >>> result.steps, result.converged, result.losses[-1]
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from coursekit.validate import positive_number

__all__ = ["hessian_condition_number", "logistic_regression_gd", "GDResult"]


def _with_intercept(X: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device), X], dim=1)


def hessian_condition_number(X: torch.Tensor, intercept: bool = True) -> float:
    r"""Condition number :math:`\kappa` of :math:`X^\top X / n`, the least-squares Hessian.

    Args:
        X: data of shape ``(N, D)``.
        intercept: prepend a column of ones (the bias is a parameter too). Default: ``True``.

    Computed in float64. Returns ``inf`` when the matrix is singular.
    """
    if X.dim() != 2:
        raise ValueError(f"X must have shape (N, D), got shape {tuple(X.shape)}")
    A = X.detach().to(torch.float64)
    if intercept:
        A = _with_intercept(A)
    eig = torch.linalg.eigvalsh(A.T @ A / A.shape[0])
    if eig[0] <= eig[-1] * torch.finfo(torch.float64).eps:
        return float("inf")
    return float(eig[-1] / eig[0])


@dataclass
class GDResult:
    """What :func:`logistic_regression_gd` returns."""

    weight: torch.Tensor           # (C, D)
    bias: torch.Tensor             # (C,)
    losses: list[float] = field(default_factory=list)   # loss before each step, then the final one
    steps: int = 0                 # steps taken until convergence (or max_steps)
    converged: bool = False        # gradient norm fell below tol
    diverged: bool = False         # the loss became non-finite or grew 1e3-fold

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return (X @ self.weight.T + self.bias).argmax(dim=1)

    def accuracy(self, X: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(X) == y).to(torch.float64).mean())


def logistic_regression_gd(X: torch.Tensor, y: torch.Tensor, lr: float, *,
                           max_steps: int = 10_000, tol: float = 1e-4,
                           num_classes: int | None = None) -> GDResult:
    r"""Softmax (multinomial logistic) regression by full-batch gradient descent from zero.

    Minimizes the mean cross-entropy :math:`\frac1N \sum_i -\log \mathrm{softmax}(W x_i + b)_{y_i}`
    with the update :math:`\theta \leftarrow \theta - \eta \nabla L(\theta)`, and stops when
    the gradient norm falls below ``tol`` (converged), when the loss blows up (diverged), or
    after ``max_steps``.

    Args:
        X: features of shape ``(N, D)``, floating point.
        y: labels of shape ``(N,)``, integers in ``[0, num_classes)``.
        lr: the step size :math:`\eta > 0`.
        max_steps: the most steps taken. Default: 10 000.
        tol: gradient-norm threshold for convergence. Default: 1e-4.
        num_classes: default ``y.max() + 1``.
    """
    if X.dim() != 2 or y.dim() != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X must be (N, D) and y (N,), got shapes {tuple(X.shape)} and {tuple(y.shape)}")
    positive_number(lr, "lr")
    C = int(num_classes if num_classes is not None else y.max() + 1)
    N = X.shape[0]
    Y = F.one_hot(y, C).to(X.dtype)                       # (N, C)
    W = torch.zeros(C, X.shape[1], dtype=X.dtype)
    b = torch.zeros(C, dtype=X.dtype)
    result = GDResult(W, b)
    for step in range(max_steps + 1):
        logits = X @ W.T + b                               # (N, C)
        value = float(F.cross_entropy(logits, y))
        result.losses.append(value)
        if not value < 1e3 * max(result.losses[0], 1.0):   # NaN, inf or blown up
            result.diverged = True
            break
        residual = (logits.softmax(dim=1) - Y) / N          # d loss / d logits
        gW, gb = residual.T @ X, residual.sum(dim=0)        # (C, D), (C,)
        if torch.sqrt((gW ** 2).sum() + (gb ** 2).sum()) < tol:
            result.converged = True
            break
        if step == max_steps:
            break
        W = W - lr * gW
        b = b - lr * gb
        result.steps = step + 1
    result.weight, result.bias = W, b
    return result
