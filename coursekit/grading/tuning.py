"""Checks for the ``tuning`` assignment: the student's ``gp_posterior`` and ``expected_improvement``.

Each check compares the student's function with :mod:`coursekit.tuning` (zero prior mean,
RBF kernel, noise variance on the diagonal, Cholesky; expected improvement for
*minimization*) on seeded inputs built to show one property, and names the classic mistake
that explains a wrong answer:

- ``check_gp_posterior``: noise-free data, lengthscale 1: shapes, dtype, the mean and variance
  formulas (the variance returned, not the standard deviation; the prior mean 0, not y's mean);
- ``check_gp_noise``: the noise variance on the diagonal of K only, and not added to the
  returned variance (the variance of the latent f);
- ``check_gp_lengthscale``: lengthscales 0.3 and 2.5, where squaring it twice, or not at all,
  shows;
- ``check_gp_nonnegative``: test points 1e-8 away from the training points of noise-free data,
  where ``variance - sum(v**2)`` is rounding noise and goes below 0 unless clamped;
- ``check_gp_near_singular``: a kernel matrix with condition number about 1e11, where an
  explicit inverse loses about 1e-7 of the variance and a solve with the Cholesky factor
  (or ``torch.linalg.solve``) stays within 2e-9;
- ``check_ei_minimization``, ``check_ei_zero_std``, ``check_ei_xi``: the sign of the
  improvement, EI = max(improvement, 0) without NaN where std = 0, and the margin ``xi``::

    check_gp_posterior(gp_posterior, points=3)
    check_ei_zero_std(expected_improvement, points=2)

Fairness: every input is float64 unless a check is asked for float32; the noise-free cases
keep the kernel matrix well conditioned (inputs at least 0.7 lengthscales apart: condition
number below 100, below 10 in ``check_gp_posterior`` and ``check_gp_lengthscale``); and the tolerance of the near-singular case was measured on 1000 seeds:
correct solutions in 15 styles (five ways to compute the kernel matrix, ``cdist`` and
``|a|^2 + |b|^2 - 2 a.b`` among them, times three solvers: ``solve_triangular``,
``cholesky_solve``, ``torch.linalg.solve``) differ from the reference by at most 1.6e-9 of
the variance, explicit inverses (``inv``, ``inverse``, ``cholesky_inverse``, ``pinv``) by at
least 8e-8 on each of the check's data sets (it uses three).
"""
from __future__ import annotations

import math
import sys
from typing import Sequence

import torch

from coursekit import tuning as _reference
from coursekit.grading import CheckFailure, assert_tensor, call, check_own_work, exact

__all__ = ["check_gp_posterior", "check_gp_noise", "check_gp_lengthscale", "check_gp_nonnegative",
           "check_gp_near_singular", "check_ei_minimization", "check_ei_zero_std", "check_ei_xi"]

F64 = torch.float64

# The reference is called through these names, taken before any ready-made function is
# forbidden inside a check.
_ref_posterior, _ref_ei = _reference.gp_posterior, _reference.expected_improvement
_ref_kernel = _reference.rbf_kernel


class _ReadyMade:
    """The ready-made functions a solution may not call, as ``(owner, name)`` pairs for
    :func:`coursekit.grading.forbid`: coursekit's own, and scikit-learn's Gaussian process
    and SciPy's normal distribution when the student's code has imported them (looked up
    each time a check runs, so that the checks never import them)."""

    def __iter__(self):
        yield from ((_reference, "gp_posterior"), (_reference, "expected_improvement"),
                    (_reference, "rbf_kernel"))
        gp = sys.modules.get("sklearn.gaussian_process")
        if gp is not None and hasattr(gp, "GaussianProcessRegressor"):
            yield from ((gp.GaussianProcessRegressor, "fit"), (gp.GaussianProcessRegressor, "predict"))
        stats = sys.modules.get("scipy.stats")
        if stats is not None and hasattr(stats, "norm"):
            yield from ((stats.norm, "cdf"), (stats.norm, "pdf"))


_READY_MADE = _ReadyMade()

# What a solution may not call, by any route, in the trusted grader's worker: torch's
# functions, builtins and operators of these names (coursekit.classroom.worker). No torch
# function computes a GP posterior or an expected improvement, and the libraries that do
# (coursekit, scikit-learn, SciPy) cannot be imported there at all (checker.BLOCKED): nothing
# is left to list. torch.distributions.Normal, torch.erf and torch.special.ndtr are allowed.
FORBIDDEN: tuple[str, ...] = ()
FORBIDDEN_WHAT = "Gaussian process or expected improvement"


def _checks(name: str):
    return check_own_work(name, _READY_MADE, what="Gaussian process or expected improvement "
                          "(coursekit.tuning, scikit-learn's GaussianProcessRegressor, scipy.stats.norm)")


# --- the classic mistakes of gp_posterior, as a plain re-implementation with switches --------

MISTAKES = {
    "noise_missing": "the noise is missing from the diagonal: K = k(X, X) + noise * I, with the noise "
                     "variance added to the diagonal only.",
    "noise_everywhere": "the noise is added to every entry of K, not only to its diagonal: "
                        "K = k(X, X) + noise * torch.eye(n).",
    "noise_squared": "the noise is squared: noise is already a variance (sigma_n**2), so "
                     "K = k(X, X) + noise * I, not noise**2 * I.",
    "noise_in_var": "the noise is added to the returned variance: gp_posterior returns the variance of "
                    "the latent function f, variance - sum(v**2), without the observation noise.",
    "lengthscale_twice": "the lengthscale is squared twice: the kernel is "
                         "variance * exp(-||a - b||**2 / (2 * lengthscale**2)), not lengthscale**4.",
    "lengthscale_not_squared": "the lengthscale is not squared: the kernel is "
                               "variance * exp(-||a - b||**2 / (2 * lengthscale**2)), not / (2 * lengthscale).",
    "no_half": "the factor 2 is missing: the kernel is variance * exp(-||a - b||**2 / (2 * lengthscale**2)).",
    "distance_not_squared": "the distance is not squared: the RBF kernel uses the squared distance "
                            "||a - b||**2 (torch.cdist returns ||a - b||, so square it).",
    "variance_ignored": "the kernel's variance is ignored: k(a, b) = variance * exp(...), and the prior "
                        "variance at a point is k(x, x) = variance.",
    "variance_squared": "the variance is squared: `variance` is already sigma_f**2, so "
                        "k(a, b) = variance * exp(...).",
    "prior_one": "the prior variance is taken as 1: var = k(x*, x*) - sum(v**2) = variance - sum(v**2).",
    "std": "it returns the standard deviation: gp_posterior returns the variance (var, not var.sqrt()).",
    "y_mean": "the mean of y is used as the prior mean: the prior mean is 0, so mean = k_*^T K^-1 y "
              "(do not subtract y.mean() and add it back).",
}


def _squared_distances(A, B):
    return ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)                  # (n, m)


def _kernel(A, B, lengthscale, variance, mistake=None):
    d2 = _squared_distances(A, B)
    if mistake == "lengthscale_twice":
        d2 = d2 / lengthscale ** 2
    elif mistake == "lengthscale_not_squared":
        d2 = d2 * lengthscale
    elif mistake == "no_half":
        d2 = 2 * d2
    elif mistake == "distance_not_squared":
        d2 = d2.sqrt()
    scale = {"variance_ignored": 1.0, "variance_squared": variance ** 2}.get(mistake, variance)
    return scale * torch.exp(-d2 / (2 * lengthscale ** 2))


def _posterior(X, y, X_star, lengthscale, variance, noise, mistake=None):
    """``(mean, var)`` in float64 with one of :data:`MISTAKES` (or none: the reference's
    formula), or ``None`` when that mistake makes K not positive definite."""
    X, y, X_star = X.to(F64), y.to(F64), X_star.to(F64)
    n = len(X)
    K = _kernel(X, X, lengthscale, variance, mistake)
    if mistake == "noise_everywhere":
        K = K + noise
    elif mistake != "noise_missing":
        K = K + (noise ** 2 if mistake == "noise_squared" else noise) * torch.eye(n, dtype=F64)
    L, info = torch.linalg.cholesky_ex(K)
    if info != 0:
        return None
    offset = y.mean() if mistake == "y_mean" else 0.0
    alpha = torch.cholesky_solve((y - offset)[:, None], L)[:, 0]
    K_star = _kernel(X, X_star, lengthscale, variance, mistake)            # (n, m)
    mean = K_star.T @ alpha + offset
    v = torch.linalg.solve_triangular(L, K_star, upper=False)
    prior = {"variance_ignored": 1.0, "variance_squared": variance ** 2, "prior_one": 1.0}.get(mistake, variance)
    var = (prior - (v ** 2).sum(0)).clamp(min=0)
    if mistake == "noise_in_var":
        var = var + noise
    elif mistake == "std":
        var = var.sqrt()
    return mean, var


def _variants(X, y, X_star, lengthscale, variance, noise, names=None):
    """``{explanation: (mean, var)}`` of the mistakes (all, or ``names``) that can be computed."""
    out = {}
    for name in names or MISTAKES:
        result = _posterior(X, y, X_star, lengthscale, variance, noise, name)
        if result is not None:
            out[MISTAKES[name]] = result
    return out


# --- data --------------------------------------------------------------------------------------

def _spread(n: int, d: int, spacing: float, gen) -> torch.Tensor:
    """n points of a jittered grid in d dimensions, in float64: any two at least 0.7 * spacing
    apart, so that with spacing >= 1.5 lengthscales the kernel matrix is well conditioned."""
    side = max(2, math.ceil((3 * n) ** (1 / d)))
    cells = torch.randperm(side ** d, generator=gen)[:n]
    index = torch.stack([(cells // side ** k) % side for k in range(d)], dim=1).to(F64)   # (n, d)
    return (index + 0.3 * (torch.rand(n, d, generator=gen, dtype=F64) - 0.5)) * spacing


def _spread_case(n, m, d, gen, spacing=1.5):
    """Well-spread inputs X (n, d), values y (n,) and m test points: random ones over the same
    region, and the first two training points (where noise-free data is interpolated)."""
    X = _spread(n, d, spacing, gen)
    y = torch.randn(n, generator=gen, dtype=F64)
    side = max(2, math.ceil((3 * n) ** (1 / d)))
    at_data = X[:min(2, n, max(m - 1, 0))]
    extra = m - len(at_data)
    X_star = (torch.rand(extra, d, generator=gen, dtype=F64) * side - 0.5) * spacing
    return X, y, torch.cat([X_star, at_data])


def _describe(X, X_star, lengthscale, variance, noise) -> str:
    return (f"gp_posterior(X of shape {tuple(X.shape)} {X.dtype}, y, X_star of shape {tuple(X_star.shape)}, "
            f"lengthscale={lengthscale:g}, variance={variance:g}, noise={noise:g})")


# --- comparing a posterior ---------------------------------------------------------------------

def _posterior_call(gp_posterior, X, y, X_star, lengthscale, variance, noise, *, what, hint=None):
    """The student's ``(mean, var)``, checked for type, shape and dtype; the inputs must be
    left as they were."""
    saved = [t.clone() for t in (X, y, X_star)]
    got = call(gp_posterior, X, y, X_star, lengthscale=lengthscale, variance=variance, noise=noise,
               what=what, hint=hint)
    for name, before, after in zip(("X", "y", "X_star"), saved, (X, y, X_star)):
        if not torch.equal(before, after):
            raise CheckFailure(f"{what} changed its argument {name} in place; work on new tensors "
                               f"(x = x - 1, not x -= 1 or x.sub_(1)).")
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        kind = f"a {type(got).__name__}" + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else "")
        raise CheckFailure(f"{what} should return the tuple (mean, var), but returned {kind}.")
    m = len(X_star)
    for name, t in zip(("mean", "var"), got):
        if type(t) is not torch.Tensor:
            raise CheckFailure(f"{what}: {name} should be a torch.Tensor, got a {type(t).__name__}.")
        if tuple(t.shape) != (m,):
            raise CheckFailure(f"{what}: {name} has shape {tuple(t.shape)}, expected ({m},): one value per "
                               f"row of X_star (take the diagonal, or sum over the n training points).")
    return got[0].detach(), got[1].detach()


def _compare_posterior(gp_posterior, X, y, X_star, lengthscale, variance, noise, *, mistakes=None,
                       hint=None):
    """One call, compared with the reference (float64, then rounded to X's dtype); a wrong
    value is explained by the first of the ``mistakes`` (all by default) that matches."""
    what = _describe(X, X_star, lengthscale, variance, noise)
    mean, var = _posterior_call(gp_posterior, X, y, X_star, lengthscale, variance, noise, what=what, hint=hint)
    expected = exact(_ref_posterior, X, y, X_star, lengthscale, variance, noise)
    wrong = _variants(X, y, X_star, lengthscale, variance, noise, mistakes)
    assert_tensor(mean, expected[0], what=f"{what}: mean", mistakes={k: v[0] for k, v in wrong.items()})
    assert_tensor(var, expected[1], what=f"{what}: var", mistakes={k: v[1] for k, v in wrong.items()})
    return mean, var


# --- the checks of gp_posterior -------------------------------------------------------------------

GP_CASES = ((5, 8, 1), (9, 6, 2), (1, 4, 3))


@_checks("gp_posterior")
def check_gp_posterior(gp_posterior, *, seed: int = 0, cases: Sequence[tuple[int, int, int]] = GP_CASES,
                       lengthscale: float = 1.0, variance: float = 1.7, noise: float = 0.0,
                       dtypes: Sequence[torch.dtype] = (F64,)) -> None:
    """The posterior mean and variance against the reference: shapes ``(m,)``, X's dtype, and the
    formulas. ``cases`` are ``(n, m, d)``: n training points (well spread, so that even noise=0
    is well conditioned), m test points (two of them training points), d dimensions. Each case
    runs in float64 first, then with the same values in each other dtype, judged by that dtype's
    default tolerance (correct float32 solutions use less than a sixth of it)."""
    gen = torch.Generator().manual_seed(seed)
    for n, m, d in cases:
        X, y, X_star = _spread_case(n, m, d, gen)
        X, X_star = X * lengthscale, X_star * lengthscale        # as well conditioned for any lengthscale
        for dtype in sorted(dtypes, key=lambda t: t != F64):   # K's condition number is below 10 here
            _compare_posterior(gp_posterior, X.to(dtype), y.to(dtype), X_star.to(dtype), lengthscale,
                               variance, noise)


_DUPLICATE_HINT = ("X holds the same input twice, with two different values, so k(X, X) has two equal rows "
                   "and is singular; it becomes positive definite only with the noise variance added to its "
                   "diagonal: K = k(X, X) + noise * torch.eye(n).")


@_checks("gp_posterior")
def check_gp_noise(gp_posterior, *, seed: int = 0, noise: Sequence[float] = (0.1, 0.5)) -> None:
    """Noisy observations: the noise variance goes on the diagonal of K (only there, and not
    squared), and the returned variance is the latent function's, without the noise. The last
    case observes one input twice, which only the noise makes possible."""
    gen = torch.Generator().manual_seed(seed)
    for i, level in enumerate(noise):
        X, y, X_star = _spread_case(7, 9, 1 + i % 2, gen, spacing=1.0)
        _compare_posterior(gp_posterior, X, y, X_star, 1.0, 1.2, level)
    X, y, X_star = _spread_case(6, 7, 1, gen, spacing=1.0)
    X = torch.cat([X, X[:1]])                                   # the first input, observed again
    y = torch.cat([y, y[:1] + 1.0])
    _compare_posterior(gp_posterior, X, y, X_star, 1.0, 1.2, max(noise), hint=_DUPLICATE_HINT)


@_checks("gp_posterior")
def check_gp_lengthscale(gp_posterior, *, seed: int = 0, lengthscales: Sequence[float] = (0.3, 2.5)) -> None:
    """The lengthscale enters the kernel squared, once: exp(-||a - b||**2 / (2 * lengthscale**2)).
    The inputs are spread in proportion to it, so that every lengthscale is as well conditioned."""
    gen = torch.Generator().manual_seed(seed)
    for i, lengthscale in enumerate(lengthscales):
        X, y, X_star = _spread_case(6, 8, 1 + i % 2, gen)
        _compare_posterior(gp_posterior, X * lengthscale, y, X_star * lengthscale, lengthscale, 0.8, 0.0)


def _near_data_case(gen, n=12, d=2, m=30):
    """Noise-free data and test points 1e-8 away from training points: there the posterior
    variance is about 1e-16 * variance, below the rounding error of variance - sum(v**2)."""
    X = _spread(n, d, 1.0, gen)
    y = torch.randn(n, generator=gen, dtype=F64)
    near = torch.randint(0, n, (m,), generator=gen)
    X_star = X[near] + 1e-8 * torch.randn(m, d, generator=gen, dtype=F64)
    return X, y, X_star


@_checks("gp_posterior")
def check_gp_nonnegative(gp_posterior, *, seed: int = 0, runs: int = 3) -> None:
    """The variance is never negative. Next to the training points of noise-free data,
    ``variance - sum(v**2)`` subtracts two numbers equal to the last digits, and rounding
    makes some differences slightly negative: clamp at 0. (``runs`` data sets, 30 test points
    each: an unclamped solution goes below 0 on at least one of them.)"""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(runs):
        X, y, X_star = _near_data_case(gen)
        what = _describe(X, X_star, 1.0, 2.5, 0.0)
        mean, var = _posterior_call(gp_posterior, X, y, X_star, 1.0, 2.5, 0.0, what=what)
        if (var < 0).any():
            i = int(var.argmin())
            raise CheckFailure(
                f"{what} returned a negative variance, var[{i}] = {var[i].item():.3g}, at a test point 1e-8 "
                f"away from a training point, where the posterior is certain (variance 0 up to rounding).\n"
                f"Likely mistake: the posterior variance is not clamped at 0. variance - sum(v**2) subtracts "
                f"two numbers that agree to the last digit, and rounding leaves a difference of either sign; "
                f"clamp it: var.clamp(min=0). (A negative variance makes var.sqrt() NaN, and EI with it.)")
        _compare_posterior(gp_posterior, X, y, X_star, 1.0, 2.5, 0.0)


NEAR_SINGULAR_TOLERANCE = 2e-8   # times the variance; see the module's documentation
_SINGULAR_HINT = ("k(X, X) of 12 inputs within [0, 1] with lengthscale 1 is singular to working precision; "
                  "only the noise variance on its diagonal (noise=1e-10) makes it positive definite: "
                  "K = k(X, X) + noise * torch.eye(n).")


def _near_singular_case(gen, n=12, m=16):
    """12 inputs in [0, 1] with lengthscale 1 and noise 1e-10: K's condition number is about
    1e11. Test points in [-0.5, 1.5]."""
    X = torch.rand(n, 1, generator=gen, dtype=F64)
    y = torch.randn(n, generator=gen, dtype=F64)
    X_star = 2 * torch.rand(m, 1, generator=gen, dtype=F64) - 0.5
    return X, y, X_star


@_checks("gp_posterior")
def check_gp_near_singular(gp_posterior, *, seed: int = 0, runs: int = 3) -> None:
    """Accuracy on a nearly singular kernel matrix (condition number about 1e11), compared in
    float64 with the Cholesky reference: the variance within 2e-8 (a solve with the Cholesky
    factor is within 2e-9; an explicit inverse is off by 1e-7 or more), the mean within 1e-3 of
    its size (on such data the mean itself is sensitive to rounding, whatever the method)."""
    gen = torch.Generator().manual_seed(seed)
    lengthscale, variance, noise = 1.0, 1.0, 1e-10
    for _ in range(runs):
        X, y, X_star = _near_singular_case(gen)
        what = _describe(X, X_star, lengthscale, variance, noise)
        mean, var = _posterior_call(gp_posterior, X, y, X_star, lengthscale, variance, noise, what=what,
                                    hint=_SINGULAR_HINT)
        ref_mean, ref_var = _ref_posterior(X, y, X_star, lengthscale, variance, noise)
        wrong = _variants(X, y, X_star, lengthscale, variance, noise)
        size = ref_mean.abs().max().clamp(min=1.0)
        near = {k: v[0] for k, v in wrong.items()}
        near[_INVERSE + " Here the mean lost digits as well."] = \
            lambda got, expected: bool((got - expected).abs().max() <= 0.1 * size)   # rounding, not a formula
        assert_tensor(mean, ref_mean, what=f"{what}: mean", scale=1e3 * size, mistakes=near)
        error = (var - ref_var).abs()
        tolerance = NEAR_SINGULAR_TOLERANCE * variance
        if not bool(error.max() <= tolerance):                     # NaN fails too
            if not bool(error.max() < 1e-3 * variance):            # far off: a formula mistake
                assert_tensor(var, ref_var, what=f"{what}: var", mistakes={k: v[1] for k, v in wrong.items()})
            i = int(torch.nan_to_num(error, nan=math.inf).argmax())
            K = _ref_kernel(X, X, lengthscale, variance) + noise * torch.eye(len(X), dtype=F64)
            negative = " (some of them negative)" if bool((var < 0).any()) else ""
            raise CheckFailure(
                f"{what}: the variances{negative} are off by up to {error.max().item():.2g} (at index {i}: got "
                f"{var[i].item():.10g}, expected {ref_var[i].item():.10g}) on a nearly singular kernel matrix "
                f"(condition number {torch.linalg.cond(K).item():.1e}). Solving with the Cholesky factor keeps "
                f"them within {tolerance:.0e}.\nLikely mistake: {_INVERSE}")


_INVERSE = ("an explicit inverse (torch.linalg.inv, torch.inverse, torch.cholesky_inverse, torch.linalg.pinv). "
            "K^-1 k_* has entries of size about 1/noise, and k_*^T K^-1 k_* loses their digits when it is "
            "subtracted from the prior variance. Never form K^-1: L = torch.linalg.cholesky(K), "
            "alpha = torch.cholesky_solve(y[:, None], L), v = torch.linalg.solve_triangular(L, k_star, upper=False), "
            "var = variance - (v**2).sum(0).")



# --- expected improvement -------------------------------------------------------------------------

def _Phi(z):
    return torch.special.ndtr(z)


def _phi(z):
    return torch.exp(-0.5 * z ** 2) / math.sqrt(2 * math.pi)


def _ei_variant(mean, std, best, xi, mistake):
    """Expected improvement with one of :data:`EI_MISTAKES`, in float64; where std is 0 the
    correct max(improvement, 0), except for the mistakes about that case."""
    mean, std = mean.to(F64), std.to(F64)
    best = best.to(F64) if isinstance(best, torch.Tensor) else best
    imp = {"maximization": mean - best - xi, "xi_ignored": best - mean, "xi_added": best - mean + xi,
           "xi_only_in_z": best - mean}.get(mistake, best - mean - xi)
    z_imp = {"xi_only_in_z": best - mean - xi, "xi_only_in_improvement": best - mean}.get(mistake, imp)
    known = std == 0
    safe = torch.where(known, torch.ones_like(std), std)
    z = z_imp / safe
    if mistake == "swapped":
        ei = imp * _phi(z) + safe * _Phi(z)
    elif mistake == "z_flipped":
        ei = imp * _Phi(-z) + safe * _phi(z)
    elif mistake == "no_exploration":
        ei = imp * _Phi(z)
    else:
        ei = imp * _Phi(z) + safe * _phi(z)
    at_zero = {"zero_at_zero": torch.zeros_like(imp), "improvement_at_zero": imp}.get(mistake, imp.clamp(min=0))
    return torch.where(known, at_zero, ei)


EI_MISTAKES = {
    "maximization": "the improvement is computed for maximization (mean - best). Here smaller is better: a "
                    "point improves by how far it falls below the best, imp = best - mean - xi, z = imp / std.",
    "z_flipped": "z has the wrong sign: z = (best - mean - xi) / std, the same improvement as in "
                 "imp * Phi(z); a lower mean must give a larger z.",
    "swapped": "Phi and phi are swapped: EI = imp * Phi(z) + std * phi(z), with Phi the standard normal "
               "CDF and phi its density.",
    "no_exploration": "the exploration term is missing: EI = imp * Phi(z) + std * phi(z); the second term "
                      "is what makes an uncertain point worth trying.",
    "xi_ignored": "xi is ignored: the improvement must beat best by the margin xi, imp = best - mean - xi "
                  "(in z as well).",
    "xi_added": "xi has the wrong sign: the margin makes an improvement harder, imp = best - mean - xi, "
                "not + xi.",
    "xi_only_in_z": "xi is used in z but not in the improvement: imp = best - mean - xi in both "
                    "imp * Phi(z) and z = imp / std.",
    "xi_only_in_improvement": "xi is used in the improvement but not in z: z = (best - mean - xi) / std.",
    "zero_at_zero": "where std is 0 it returns 0. With no uncertainty the improvement is certain: "
                    "EI = max(best - mean - xi, 0) there.",
    "improvement_at_zero": "where std is 0 it returns the improvement itself, which may be negative: EI is "
                           "never negative; there it is max(best - mean - xi, 0).",
}


def _ei_describe(mean, std, best, xi) -> str:
    shown = f"{best:g}" if isinstance(best, float) else f"tensor of shape {tuple(best.shape)}"
    return (f"expected_improvement(mean of shape {tuple(mean.shape)} {mean.dtype}, std of shape "
            f"{tuple(std.shape)}, best={shown}, xi={xi:g})")


def _ei_data(shape, gen, zeros=False, xi=0.0):
    """mean ~ N(0, 1) and std in [0.2, 1.2), for best = 0: some points improve on it, some do
    not. With ``zeros``, std is 0 at every third position, and the first mean is -xi, so that
    the improvement there, 0 - (-xi) - xi, is exactly 0 (where z = 0 / 0)."""
    mean = torch.randn(shape, generator=gen, dtype=F64)
    std = 0.2 + torch.rand(shape, generator=gen, dtype=F64)
    if zeros:
        flat_std, flat_mean = std.view(-1), mean.view(-1)
        flat_std[::3] = 0.0
        flat_mean[0] = -xi
    return mean, std


def _compare_ei(expected_improvement, mean, std, best, xi, *, names):
    what = _ei_describe(mean, std, best, xi)
    saved = (mean.clone(), std.clone())
    got = call(expected_improvement, mean, std, best, xi=xi, what=what)
    if not (torch.equal(saved[0], mean) and torch.equal(saved[1], std)):
        raise CheckFailure(f"{what} changed mean or std in place; work on new tensors.")
    if type(got) is torch.Tensor and got.shape == mean.shape:
        known = std == 0
        bad = known & ~torch.isfinite(got)
        if bad.any():
            i = int(bad.reshape(-1).nonzero()[0])
            b = best if isinstance(best, float) else best.reshape(-1)[0].item()
            raise CheckFailure(
                f"{what} returned {got.reshape(-1)[i].item()} where std is 0 (flat index {i}: mean "
                f"{mean.reshape(-1)[i].item():.4g}, best {b:.4g}).\n"
                f"Likely mistake: NaN at std = 0. There z = imp / std is 0/0 = NaN or +-inf, and inf * 0 is "
                f"NaN. Where std is 0 the value is known, so EI = max(imp, 0): compute the formula with a "
                f"safe std, torch.where(std > 0, std, 1), then pick torch.where(std > 0, ei, imp.clamp(min=0)).")
    expected = exact(_ref_ei, mean, std, best if isinstance(best, float) else best.to(mean.dtype), xi)
    mistakes = {EI_MISTAKES[name]: _ei_variant(mean, std, best, xi, name) for name in names}
    assert_tensor(got, expected, what=what, mistakes=mistakes)


EI_SHAPES = ((20,), (4, 5))


@_checks("expected_improvement")
def check_ei_minimization(expected_improvement, *, seed: int = 0, shapes: Sequence[tuple] = EI_SHAPES,
                          dtypes: Sequence[torch.dtype] = (F64,)) -> None:
    """EI for minimization, xi = 0, std > 0: (best - mean) * Phi(z) + std * phi(z) with
    z = (best - mean) / std, in mean's shape and dtype."""
    gen = torch.Generator().manual_seed(seed)
    for shape in shapes:
        mean, std = _ei_data(shape, gen)
        for dtype in sorted(dtypes, key=lambda t: t != F64):
            _compare_ei(expected_improvement, mean.to(dtype), std.to(dtype), 0.0, 0.0,
                        names=("maximization", "z_flipped", "swapped", "no_exploration"))


@_checks("expected_improvement")
def check_ei_zero_std(expected_improvement, *, seed: int = 0, shapes: Sequence[tuple] = ((12,), (3, 6)),
                      dtypes: Sequence[torch.dtype] = (F64,), xi: float = 0.0,
                      best_as_tensor: bool = False) -> None:
    """Where std is 0 (a point already observed, without noise) EI is max(best - mean - xi, 0),
    not NaN; elsewhere the usual formula. ``best_as_tensor`` passes best as a 0-d tensor."""
    gen = torch.Generator().manual_seed(seed)
    for shape in shapes:
        mean, std = _ei_data(shape, gen, zeros=True, xi=xi)
        for dtype in sorted(dtypes, key=lambda t: t != F64):
            best = torch.tensor(0.0, dtype=dtype) if best_as_tensor else 0.0
            _compare_ei(expected_improvement, mean.to(dtype), std.to(dtype), best, xi,
                        names=("zero_at_zero", "improvement_at_zero", "maximization", "xi_ignored", "xi_added",
                               "swapped", "z_flipped", "no_exploration"))


@_checks("expected_improvement")
def check_ei_xi(expected_improvement, *, seed: int = 0, xis: Sequence[float] = (0.1, 0.5)) -> None:
    """The margin xi: imp = best - mean - xi, in the improvement and in z."""
    gen = torch.Generator().manual_seed(seed)
    for xi in xis:
        mean, std = _ei_data((25,), gen)
        _compare_ei(expected_improvement, mean, std, 0.0, xi,
                    names=("xi_ignored", "xi_added", "xi_only_in_z", "xi_only_in_improvement", "maximization",
                           "z_flipped", "swapped", "no_exploration"))
