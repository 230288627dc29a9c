"""Tuning hyperparameters: grid search, random search and Bayesian optimization from scratch.

- a Gaussian-process surrogate: the kernels :func:`rbf_kernel` and :func:`matern52_kernel`,
  the posterior :func:`gp_posterior` (by Cholesky, noise on the diagonal) and
  :func:`log_marginal_likelihood`, which chooses the kernel's hyperparameters;
- two acquisition functions, :func:`expected_improvement` and
  :func:`lower_confidence_bound`;
- the searches :func:`grid_search`, :func:`random_search` and :func:`bayes_opt`, over a
  box or a log-box, each returning the :class:`Trials` it ran;
- :func:`study_storage`, the embedded SQLite storage of an Optuna study, under the course's
  cache.

**Everything minimizes**: the objective is a loss (e.g. a validation loss), expected
improvement is the expected amount by which a point falls *below* the best value so far,
and the next point is the one that maximizes it, or that minimizes the lower confidence
bound :math:`\\mu - \\kappa\\sigma`.

A search space is a dict ``{name: (low, high)}`` (uniform), ``{name: (low, high, "log")}``
(log-uniform, e.g. a learning rate), ``{name: (low, high, "int")}`` or
``{name: (low, high, "log-int")}`` (integers, e.g. a width); bounds are included. A point is
a dict ``{name: value}`` of Python floats (ints for the integer kinds), and the objective is
called as ``objective(point) -> float``.

Example::

    >>> space = {"lr": (1e-4, 1.0, "log"), "dropout": (0.0, 0.5)}
    >>> trials = bayes_opt(lambda p: validation_loss(**p), space, n_trials=25)
    >>> params, value = trials.best
"""
from __future__ import annotations

import contextlib
import itertools
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from coursekit.data import cache_dir
from coursekit.validate import non_negative_number, positive_int, positive_number

__all__ = ["rbf_kernel", "matern52_kernel", "gp_posterior", "log_marginal_likelihood",
           "expected_improvement", "lower_confidence_bound", "Trials", "grid_search",
           "random_search", "bayes_opt", "study_storage", "KINDS", "KERNELS", "ACQUISITIONS"]

KINDS = ("linear", "log", "int", "log-int")   # the kinds of a search-space dimension
ACQUISITIONS = ("ei", "lcb")

# bayes_opt's settings that are not arguments: the grid its kernel hyperparameters are chosen
# from (lengthscales in the unit cube, variances of the standardized objective), and the
# standard deviation of its local perturbations of the best point, in the unit cube.
LENGTHSCALE_GRID = (0.03, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0)
VARIANCE_GRID = (0.3, 1.0, 3.0)
LOCAL_STEP = 0.1


# ----------------------------------------------------------------------------- kernels

def _as_inputs(X, name: str, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """X as an (n, d) tensor: float64 for lists and numpy arrays unless ``dtype`` is given,
    a 1-D input taken as d = 1."""
    if not isinstance(X, torch.Tensor) or not X.is_floating_point():
        X = torch.as_tensor(X, dtype=dtype or torch.float64, device=device)
    elif dtype is not None:
        X = X.to(dtype=dtype, device=device)
    if X.dim() == 1:
        X = X.unsqueeze(1)                                          # (n,) -> (n, 1)
    if X.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d) or (n,), got shape {tuple(X.shape)}")
    return X


def _squared_distances(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """||a - b||^2 for every row a of A (n, d) and b of B (m, d): (n, m), never negative."""
    return ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)           # (n, m, d) -> (n, m)


def _check_kernel_inputs(A, B, lengthscale, variance):
    positive_number(lengthscale, "lengthscale")
    positive_number(variance, "variance")
    A = _as_inputs(A, "A")
    B = _as_inputs(B, "B", dtype=A.dtype, device=A.device)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B must have the same number of columns d, got {A.shape[1]} and {B.shape[1]}")
    return A, B


def rbf_kernel(A, B, lengthscale: float = 1.0, variance: float = 1.0) -> torch.Tensor:
    r"""The squared-exponential (RBF, Gaussian) kernel between the rows of A and B.

    .. math::
        k(a, b) = \sigma_f^2 \exp\!\Big(-\frac{\lVert a - b \rVert^2}{2\ell^2}\Big)

    Args:
        A: :math:`(n, d)`, or :math:`(n,)` for :math:`d = 1`.
        B: :math:`(m, d)`, or :math:`(m,)`.
        lengthscale: :math:`\ell > 0`, how far apart two inputs may be and still be alike. Default: 1.0.
        variance: :math:`\sigma_f^2 > 0`, the prior variance :math:`k(a, a)`. Default: 1.0.

    Returns:
        The kernel matrix, :math:`(n, m)`, in A's dtype (float64 for lists).

    Raises:
        ValueError: for a lengthscale or variance that is not positive, or A and B with
            different numbers of columns.
    """
    A, B = _check_kernel_inputs(A, B, lengthscale, variance)
    return variance * torch.exp(-_squared_distances(A, B) / (2 * lengthscale ** 2))


def matern52_kernel(A, B, lengthscale: float = 1.0, variance: float = 1.0) -> torch.Tensor:
    r"""The Matérn kernel with :math:`\nu = 5/2` between the rows of A and B.

    .. math::
        k(a, b) = \sigma_f^2 \Big(1 + \sqrt5\,r + \tfrac53 r^2\Big) e^{-\sqrt5\,r},
        \qquad r = \frac{\lVert a - b \rVert}{\ell}

    Its functions are twice differentiable, rougher than the RBF kernel's (infinitely
    differentiable) ones: the usual choice for Bayesian optimization (Snoek et al. 2012).

    Args and Returns: as :func:`rbf_kernel`.
    """
    A, B = _check_kernel_inputs(A, B, lengthscale, variance)
    r = torch.sqrt(_squared_distances(A, B)) / lengthscale
    s = math.sqrt(5) * r
    return variance * (1 + s + s ** 2 / 3) * torch.exp(-s)


KERNELS = {"rbf": rbf_kernel, "matern52": matern52_kernel}


def _kernel(kernel: str) -> Callable:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}")
    return KERNELS[kernel]


# ----------------------------------------------------------------------------- the GP posterior

def _cholesky(K: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of K. If K is not numerically positive definite (duplicated
    inputs with little or no noise), a jitter of 1e-10 times its mean diagonal is added to
    the diagonal, ten times larger at each try up to 1e-3, as GPyTorch does."""
    eye = torch.eye(len(K), dtype=K.dtype, device=K.device)
    scale = K.diagonal().mean().clamp_min(torch.finfo(K.dtype).tiny)
    for jitter in [0.0] + [scale * 10.0 ** e for e in range(-10, -2)]:
        L, info = torch.linalg.cholesky_ex(K + jitter * eye)
        if info == 0:
            return L
    raise ValueError("the kernel matrix k(X, X) + noise * I is not positive definite even with "
                     f"{float(jitter):.3g} added to its diagonal; increase noise")


def _fit_inputs(X, y, noise):
    """Checks gp_posterior's and log_marginal_likelihood's data: X (n, d), y (n,) in X's dtype."""
    non_negative_number(noise, "noise")
    X = _as_inputs(X, "X")
    y = torch.as_tensor(y, dtype=X.dtype, device=X.device).reshape(-1)
    if len(y) != len(X):
        raise ValueError(f"X and y must have the same length, got {len(X)} rows in X and {len(y)} values in y")
    return X, y


def gp_posterior(X, y, X_star, lengthscale: float = 1.0, variance: float = 1.0,
                 noise: float = 1e-6,
                 kernel: str = "rbf") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Posterior mean and variance of a zero-mean Gaussian process at the points X_star.

    With :math:`K = k(X, X) + \sigma_n^2 I` (the noise variance on the diagonal), its
    Cholesky factor :math:`K = L L^\top`, :math:`k_* = k(X, X_*)`:

    .. math::
        \mu(x_*) = k_*^\top K^{-1} y = k_*^\top \alpha, \qquad
        \sigma^2(x_*) = k(x_*, x_*) - k_*^\top K^{-1} k_* = \sigma_f^2 - \lVert v \rVert^2,
        \quad v = L^{-1} k_*

    :math:`\alpha` comes from two triangular solves with :math:`L` (``cholesky_solve``) and
    :math:`v` from one: :math:`K^{-1}` is never formed, which would lose accuracy when
    :math:`K` is nearly singular. The variance is that of the latent function :math:`f`
    (the noise is not added), clamped at 0 against rounding. Should :math:`K` not be
    numerically positive definite, a small jitter is added to its diagonal (see the source).

    Args:
        X: the observed inputs, :math:`(n, d)`, or :math:`(n,)` for :math:`d = 1`.
        y: the observed values, :math:`(n,)`.
        X_star: where to predict, :math:`(m, d)`, or :math:`(m,)`.
        lengthscale: :math:`\ell > 0`. Default: 1.0.
        variance: :math:`\sigma_f^2 > 0`, the prior variance. Default: 1.0.
        noise: :math:`\sigma_n^2 \ge 0`, the variance of the observation noise. Default: 1e-6.
        kernel: ``"rbf"`` or ``"matern52"``. Default: ``"rbf"``.

    Returns:
        ``(mean, var)``, each :math:`(m,)`, in X's dtype (float64 for lists). With no data
        (:math:`n = 0`) they are the prior's, 0 and :math:`\sigma_f^2`.

    Raises:
        ValueError: for a negative noise, a lengthscale or variance that is not positive, an
            unknown kernel, X and y of different lengths, or X_star with another number of
            columns than X.
    """
    k = _kernel(kernel)
    X, y = _fit_inputs(X, y, noise)
    X_star = _as_inputs(X_star, "X_star", dtype=X.dtype, device=X.device)
    if X_star.shape[1] != X.shape[1]:
        raise ValueError(f"X_star must have as many columns as X (d = {X.shape[1]}), "
                         f"got shape {tuple(X_star.shape)}")
    eye = torch.eye(len(X), dtype=X.dtype, device=X.device)
    K = k(X, X, lengthscale, variance) + noise * eye               # (n, n)
    L = _cholesky(K)                                               # (n, n)
    alpha = torch.cholesky_solve(y.unsqueeze(1), L)                # (n, 1): K^-1 y
    K_star = k(X, X_star, lengthscale, variance)                   # (n, m)
    mean = (K_star * alpha).sum(0)                                 # (m,): k_*^T alpha
    v = torch.linalg.solve_triangular(L, K_star, upper=False)      # (n, m): L^-1 k_*
    var = (variance - (v ** 2).sum(0)).clamp_min(0)                # (m,)
    return mean, var


def log_marginal_likelihood(X, y, lengthscale: float, variance: float, noise: float,
                            kernel: str = "rbf") -> float:
    r"""The log evidence :math:`\log p(y \mid X)` of a zero-mean Gaussian process.

    .. math::
        \log p(y \mid X) = -\tfrac12 y^\top K^{-1} y - \sum_i \log L_{ii} - \tfrac n2 \log 2\pi,
        \qquad K = k(X, X) + \sigma_n^2 I = L L^\top

    (:math:`\sum_i \log L_{ii} = \tfrac12 \log\det K`). The first term rewards fitting the
    data, the second penalizes a flexible model: maximizing it over the kernel's
    hyperparameters is how :func:`bayes_opt` chooses them.

    Args:
        X, y, noise, kernel: as :func:`gp_posterior`.
        lengthscale, variance: the kernel's hyperparameters.

    Returns:
        A Python float.

    Raises:
        ValueError: as :func:`gp_posterior`.
    """
    k = _kernel(kernel)
    X, y = _fit_inputs(X, y, noise)
    K = k(X, X, lengthscale, variance) + noise * torch.eye(len(X), dtype=X.dtype, device=X.device)
    L = _cholesky(K)
    alpha = torch.cholesky_solve(y.unsqueeze(1), L).squeeze(1)         # (n,)
    fit = -0.5 * (y * alpha).sum()
    complexity = -torch.log(L.diagonal()).sum()
    return float(fit + complexity - 0.5 * len(X) * math.log(2 * math.pi))


# ----------------------------------------------------------------------------- acquisitions

def _as_values(x, like: torch.Tensor | None = None) -> torch.Tensor:
    """A tensor: float64 for Python numbers and lists, or ``like``'s dtype and device."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x
    if like is not None:
        return torch.as_tensor(x, dtype=like.dtype, device=like.device)
    return torch.as_tensor(x, dtype=torch.float64)


def _check_std(std: torch.Tensor) -> None:
    if (std < 0).any():
        raise ValueError(f"std must be >= 0, got a minimum of {std.min().item()!r}")


def expected_improvement(mean, std, best, xi: float = 0.0) -> torch.Tensor:
    r"""Expected improvement below ``best``, for minimization.

    The improvement of a point whose value is :math:`f \sim \mathcal N(\mu, \sigma^2)` is
    :math:`\max(f_\text{best} - \xi - f, 0)`, how far it falls below the best value so far
    (less a margin :math:`\xi`); its expectation is

    .. math::
        \mathrm{EI} = (f_\text{best} - \mu - \xi)\,\Phi(z) + \sigma\,\varphi(z), \qquad
        z = \frac{f_\text{best} - \mu - \xi}{\sigma},

    with :math:`\Phi, \varphi` the standard normal CDF and density. A lower mean, or a larger
    :math:`\sigma`, gives a larger EI; the next point to evaluate maximizes it.
    :math:`\xi > 0` asks for a clear improvement and so favours exploring. Where
    :math:`\sigma = 0` the value is known and :math:`\mathrm{EI} = \max(f_\text{best} - \mu - \xi, 0)`,
    without NaN, and with finite gradients. A NaN in ``mean``, ``std`` or ``best``
    propagates to the EI at that point (as in any tensor operation).

    Args:
        mean: :math:`\mu`, the posterior mean, any shape.
        std: :math:`\sigma \ge 0`, the posterior standard deviation (not the variance),
            broadcastable with ``mean``.
        best: :math:`f_\text{best}`, the lowest value observed so far, broadcastable.
        xi: :math:`\xi`, the margin. Default: 0.0.

    Returns:
        EI, the broadcast shape of the three, in ``mean``'s dtype (float64 for lists).

    Raises:
        ValueError: for a negative ``std``.
    """
    mean = _as_values(mean)
    std, best = _as_values(std, like=mean), _as_values(best, like=mean)
    _check_std(std)
    improvement = best - mean - xi
    known = std == 0
    # 1 where std is 0: no 0 / 0 below, in the backward pass either
    safe_std = torch.where(known, torch.ones_like(std), std)
    z = improvement / safe_std
    density = torch.exp(-0.5 * z ** 2) / math.sqrt(2 * math.pi)
    ei = improvement * torch.special.ndtr(z) + safe_std * density
    return torch.where(known, improvement.clamp_min(0), ei)


def lower_confidence_bound(mean, std, kappa: float = 2.0) -> torch.Tensor:
    r"""Lower confidence bound, for minimization: the next point *minimizes* it.

    .. math::
        \mathrm{LCB} = \mu - \kappa\,\sigma

    (the upper confidence bound :math:`\mu + \kappa\sigma` of maximization, turned over). A
    larger :math:`\kappa` favours exploring uncertain points.

    Args:
        mean: :math:`\mu`, any shape.
        std: :math:`\sigma \ge 0`, broadcastable with ``mean``.
        kappa: :math:`\kappa \ge 0`. Default: 2.0.

    Returns:
        The bound, the broadcast shape, in ``mean``'s dtype (float64 for lists).

    Raises:
        ValueError: for a negative ``std`` or ``kappa``.
    """
    non_negative_number(kappa, "kappa")
    mean = _as_values(mean)
    std = _as_values(std, like=mean)
    _check_std(std)
    return mean - kappa * std


# ----------------------------------------------------------------------------- search spaces

@dataclass(frozen=True)
class _Dim:
    """One dimension of a search space: its name, bounds (both included) and kind."""
    name: str
    low: float
    high: float
    kind: str

    def from_unit(self, u: float):
        """The value at u in [0, 1]: linear, or geometric for the log kinds. The integer kinds
        give each integer an equal share of [0, 1] (of its log for ``"log-int"``)."""
        low, high = self.low, self.high
        if self.kind in ("int", "log-int"):
            low, high = low - 0.5, high + 0.5                       # each integer gets a width of 1
        if self.kind in ("log", "log-int"):
            x = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            x = low + u * (high - low)
        if self.kind in ("int", "log-int"):
            return int(min(max(math.floor(x + 0.5), self.low), self.high))
        return float(min(max(x, self.low), self.high))

    def grid(self, points: int) -> list:
        """``points`` values from low to high (one: the middle): evenly spaced, or
        geometrically for the log kinds; the integer kinds rounded, without repeats."""
        if points == 1:
            log = self.kind in ("log", "log-int")
            values = [math.sqrt(self.low * self.high) if log else (self.low + self.high) / 2]
        elif self.kind in ("log", "log-int"):
            ratio = self.high / self.low
            values = [self.low * ratio ** (i / (points - 1)) for i in range(points)]
        else:
            values = [self.low + (self.high - self.low) * i / (points - 1) for i in range(points)]
        if self.kind in ("int", "log-int"):
            return list(dict.fromkeys(int(math.floor(v + 0.5)) for v in values))
        return [float(v) for v in values]


def _parse_space(space) -> list[_Dim]:
    """The dimensions of a search space ``{name: (low, high[, kind])}``, checked."""
    if not isinstance(space, dict) or not space:
        raise ValueError(f"space must be a non-empty dict {{name: (low, high[, kind])}}, got {space!r}")
    dims = []
    for name, spec in space.items():
        if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
            raise ValueError(f"space[{name!r}] must be (low, high) or (low, high, kind), got {spec!r}")
        low, high, kind = (*spec, "linear") if len(spec) == 2 else spec
        if kind not in KINDS:
            raise ValueError(f"space[{name!r}]: kind must be one of {list(KINDS)}, got {kind!r}")
        for bound in (low, high):
            if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not math.isfinite(bound):
                raise ValueError(f"space[{name!r}]: bounds must be finite numbers, got {spec!r}")
        if not low < high:
            raise ValueError(f"space[{name!r}]: low must be < high, got low = {low!r}, high = {high!r}")
        if kind in ("log", "log-int") and low <= 0:
            raise ValueError(f"space[{name!r}]: a log dimension needs low > 0, got low = {low!r}")
        if kind in ("int", "log-int") and (low != int(low) or high != int(high)):
            raise ValueError(f"space[{name!r}]: an integer dimension needs integer bounds, got {spec!r}")
        dims.append(_Dim(str(name), low, high, kind))
    return dims


def _point(dims: list[_Dim], u) -> dict:
    """The point {name: value} at u, a position in the unit cube [0, 1]^d."""
    return {dim.name: dim.from_unit(float(ui)) for dim, ui in zip(dims, u)}


# ----------------------------------------------------------------------------- trials

@dataclass
class Trials:
    """The points a search evaluated, in order, and the objective's values there.

    A value may be NaN (e.g. a diverged training): it counts as worse than every number in
    :meth:`best_so_far` and :attr:`best`.

    Attributes:
        params: one dict ``{name: value}`` per trial.
        values: the objective at each, Python floats.
    """
    params: list[dict] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    def add(self, params: dict, value: float) -> None:
        """Records one trial."""
        self.params.append(dict(params))
        self.values.append(float(value))

    def best_so_far(self) -> list[float]:
        """The running minimum of the values: entry i is the best of trials 0..i (NaN until
        a trial returns a number)."""
        best, out = math.nan, []
        for value in self.values:
            if math.isnan(best) or value < best:
                best = value
            out.append(best)
        return out

    @property
    def best(self) -> tuple[dict, float]:
        """``(params, value)`` of the trial with the lowest value (the first one on a tie)."""
        valid = [i for i, v in enumerate(self.values) if not math.isnan(v)]
        if not valid:
            raise ValueError(f"no trial has a value that is a number, got {len(self)} trials")
        i = min(valid, key=lambda j: self.values[j])
        return self.params[i], self.values[i]


def _evaluate(objective: Callable[[dict], float], params: dict, trials: Trials) -> None:
    trials.add(params, float(objective(dict(params))))


# ----------------------------------------------------------------------------- grid and random search

def grid_search(objective: Callable[[dict], float], space: dict, points_per_dim) -> Trials:
    r"""Evaluates ``objective`` at every point of a grid over ``space``.

    Each dimension gets ``points_per_dim`` values from low to high, both included: evenly
    spaced, geometrically spaced for ``"log"`` (so a learning rate gets 1e-4, 1e-3, 1e-2,
    ...), rounded and without repeats for the integer kinds. The grid is evaluated in a
    fixed order, the last dimension changing fastest. Its size is the product of the
    numbers of values, so it grows exponentially with the dimension, and a dimension that
    does not matter multiplies the cost without adding information (Bergstra & Bengio 2012).

    Args:
        objective: ``objective(params: dict) -> float``, to minimize.
        space: ``{name: (low, high[, kind])}``, see the module's documentation.
        points_per_dim: values per dimension, one int for all or a dict ``{name: int}``.

    Returns:
        :class:`Trials`, one per grid point.

    Raises:
        ValueError: for a bad space or a number of points that is not a positive integer.
    """
    dims = _parse_space(space)
    if isinstance(points_per_dim, dict):
        if set(points_per_dim) != {dim.name for dim in dims}:
            raise ValueError(f"points_per_dim must give a number for each of {[d.name for d in dims]}, "
                             f"got {points_per_dim!r}")
        counts = [positive_int(points_per_dim[dim.name], f"points_per_dim[{dim.name!r}]") for dim in dims]
    else:
        counts = [positive_int(points_per_dim, "points_per_dim")] * len(dims)
    trials = Trials()
    for values in itertools.product(*(dim.grid(n) for dim, n in zip(dims, counts))):
        _evaluate(objective, {dim.name: v for dim, v in zip(dims, values)}, trials)
    return trials


def random_search(objective: Callable[[dict], float], space: dict, n_trials: int,
                  seed: int = 0) -> Trials:
    r"""Evaluates ``objective`` at ``n_trials`` points drawn at random from ``space``.

    Each dimension is drawn independently: uniformly, log-uniformly for ``"log"``
    (:math:`\log x` uniform), each integer equally likely for ``"int"``. With the same
    budget as a grid, every trial has a new value in every dimension, so the dimensions that
    matter are explored with ``n_trials`` distinct values instead of a grid's
    :math:`n^{1/d}` (Bergstra & Bengio 2012).

    Args:
        objective: ``objective(params: dict) -> float``, to minimize.
        space: ``{name: (low, high[, kind])}``.
        n_trials: the number of points.
        seed: seeds the draws (a generator of its own; the global RNG is not touched). Default: 0.

    Returns:
        :class:`Trials`, ``n_trials`` of them.

    Raises:
        ValueError: for a bad space or an ``n_trials`` that is not a positive integer.
    """
    dims = _parse_space(space)
    positive_int(n_trials, "n_trials")
    generator = torch.Generator().manual_seed(seed)
    U = torch.rand(n_trials, len(dims), generator=generator, dtype=torch.float64)   # (n_trials, d)
    trials = Trials()
    for u in U:
        _evaluate(objective, _point(dims, u), trials)
    return trials


# ----------------------------------------------------------------------------- Bayesian optimization

def _standardized(values: list[float]) -> torch.Tensor:
    """The values with mean 0 and standard deviation 1 (a failed, non-finite value replaced
    by the worst finite one), the scale of the GP's prior."""
    y = torch.tensor(values, dtype=torch.float64)
    finite = torch.isfinite(y)
    y = torch.where(finite, y, y[finite].max())
    scale = y.std() if len(y) > 1 else torch.tensor(1.0, dtype=torch.float64)
    return (y - y.mean()) / (scale if scale > 0 else 1.0)


def _fit_hyperparameters(X: torch.Tensor, y: torch.Tensor, kernel: str, noise: float) -> tuple[float, float]:
    """(lengthscale, variance) from the grids that maximize the log marginal likelihood."""
    grid = itertools.product(LENGTHSCALE_GRID, VARIANCE_GRID)
    return max(grid, key=lambda lv: log_marginal_likelihood(X, y, *lv, noise, kernel))


def _candidates(X: torch.Tensor, y: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n uniform points of the unit cube, and n // 8 small steps around the best point so far."""
    d = X.shape[1]
    uniform = torch.rand(n, d, generator=generator, dtype=torch.float64)                  # (n, d)
    steps = LOCAL_STEP * torch.randn(n // 8, d, generator=generator, dtype=torch.float64)
    local = (X[y.argmin()] + steps).clamp(0, 1)                                            # (n // 8, d)
    return torch.cat([uniform, local])


@contextlib.contextmanager
def _one_thread():
    """Runs the block on one CPU thread: the surrogate's matrices are a few dozen rows, too
    small to gain from threads, and on a busy machine waiting for them costs milliseconds per
    Cholesky factorization."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@_one_thread()
def _next_point(X: torch.Tensor, values: list[float], *, acquisition: str, xi: float,
                kappa: float, kernel: str, noise: float, candidates: int,
                generator: torch.Generator) -> torch.Tensor:
    """The candidate of the unit cube that the acquisition prefers, given the trials (X, values)."""
    y = _standardized(values)
    lengthscale, variance = _fit_hyperparameters(X, y, kernel, noise)
    C = _candidates(X, y, candidates, generator)
    mean, var = gp_posterior(X, y, C, lengthscale, variance, noise, kernel)
    std = var.sqrt()
    if acquisition == "ei":
        score = expected_improvement(mean, std, best=y.min(), xi=xi)
    else:
        score = -lower_confidence_bound(mean, std, kappa)
    return C[score.argmax()]


def bayes_opt(objective: Callable[[dict], float], space: dict, n_trials: int, *,
              n_initial: int = 5, acquisition: str = "ei", xi: float = 0.01, kappa: float = 2.0,
              kernel: str = "matern52", noise: float = 1e-6, candidates: int = 2048,
              seed: int = 0) -> Trials:
    r"""Minimizes ``objective`` over ``space`` by Bayesian optimization with a Gaussian process.

    The loop, in the unit cube :math:`[0, 1]^d` (a log dimension mapped by its log):

    1. evaluate ``n_initial`` random points;
    2. standardize the values observed so far (mean 0, std 1; a failed trial, NaN or inf,
       counts as the worst value seen);
    3. choose the kernel's lengthscale and variance from a small grid by maximizing
       :func:`log_marginal_likelihood`;
    4. compute the posterior (:func:`gp_posterior`) at ``candidates`` random points plus
       local perturbations of the best point;
    5. evaluate the candidate that maximizes :func:`expected_improvement` (``"ei"``) or
       minimizes :func:`lower_confidence_bound` (``"lcb"``); back to 2 until ``n_trials``.

    Args:
        objective: ``objective(params: dict) -> float``, to minimize.
        space: ``{name: (low, high[, kind])}``.
        n_trials: the number of evaluations, initial ones included.
        n_initial: random evaluations before the surrogate is used. Default: 5.
        acquisition: ``"ei"`` or ``"lcb"``. Default: ``"ei"``.
        xi: EI's margin, in units of the standardized objective. Default: 0.01.
        kappa: LCB's weight of the standard deviation. Default: 2.0.
        kernel: ``"matern52"`` or ``"rbf"``. Default: ``"matern52"``.
        noise: the noise variance on the diagonal, in standardized units; raise it for a
            noisy objective (e.g. training with different seeds). Default: 1e-6.
        candidates: random points the acquisition is maximized over. Default: 2048.
        seed: seeds the random points (a generator of its own). Default: 0.

    Returns:
        :class:`Trials`, ``n_trials`` of them.

    Raises:
        ValueError: for a bad space, an unknown acquisition or kernel, a count that is not
            a positive integer, or a negative ``xi``, ``kappa`` or ``noise``.
    """
    dims = _parse_space(space)
    positive_int(n_trials, "n_trials")
    positive_int(n_initial, "n_initial")
    positive_int(candidates, "candidates")
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {list(ACQUISITIONS)}, got {acquisition!r}")
    _kernel(kernel)
    non_negative_number(xi, "xi")
    non_negative_number(kappa, "kappa")
    non_negative_number(noise, "noise")
    generator = torch.Generator().manual_seed(seed)
    trials, U = Trials(), []
    for t in range(n_trials):
        if t < n_initial or not any(math.isfinite(v) for v in trials.values):
            u = torch.rand(len(dims), generator=generator, dtype=torch.float64)
        else:
            u = _next_point(torch.stack(U), trials.values, acquisition=acquisition, xi=xi,
                            kappa=kappa, kernel=kernel, noise=noise, candidates=candidates,
                            generator=generator)
        U.append(u)
        _evaluate(objective, _point(dims, u), trials)
    return trials


# ----------------------------------------------------------------------------- Optuna

def study_storage(name: str) -> str:
    """The embedded default storage of the Optuna study ``name``: a SQLite file under the
    course's cache.

    Pass it to ``optuna.create_study(study_name=name, storage=study_storage(name),
    load_if_exists=True)``. Several worker processes on one machine may share it (each calls
    ``optuna.load_study`` with the same storage); across machines, use a PostgreSQL or MySQL
    URL instead.

    Args:
        name: the study's name, which names the file: letters, digits, ``_``, ``-``, ``.``.

    Returns:
        ``"sqlite:///<cache>/optuna/<name>.db"``, with ``<cache>`` from
        :func:`coursekit.data.cache_dir` (the folder is created).

    Raises:
        ValueError: for a name that cannot be a file name.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise ValueError(f"name must be letters, digits, '_', '-' or '.' (not starting with '.' "
                         f"or '-'), got {name!r}")
    folder = (cache_dir() / "optuna").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return "sqlite:///" + (folder / f"{name}.db").as_posix()
