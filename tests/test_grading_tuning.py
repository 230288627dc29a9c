"""coursekit.grading.tuning: the solution and the reference pass, the released stubs and
coursekit's own functions score nothing, each classic mistake fails its check with a message
that names it, the known mistakes are all named by a visible check, the checks that hang on
rounding (an unclamped variance, an explicit inverse) catch every style of the mistake on
every seed tried while correct styles pass, and tests/test_nbgrader.py's crafted submissions
lose exactly the cells it expects."""
import ast
import re

import pytest
import torch

from coursekit import course, tuning
from coursekit.grading import CheckFailure
from coursekit.grading import tuning as checks
from conftest import ROOT, failure_messages, graded_cells, notebook_cells, run_cell, solution_cells, student_classes, with_mistake

GP_CHECKS = [checks.check_gp_posterior, checks.check_gp_noise, checks.check_gp_lengthscale,
             checks.check_gp_nonnegative, checks.check_gp_near_singular]
EI_CHECKS = [checks.check_ei_minimization, checks.check_ei_zero_std, checks.check_ei_xi]
ANSWERS = ("gp_posterior", "expected_improvement")


@pytest.fixture(scope="module")
def cells():
    return solution_cells("tuning")


def student(cells, cell, *edits):
    """The function that the answer cell ``cell`` defines, with ``edits`` made to it."""
    return with_mistake(cells, cell, *edits, setup=("imports",))[cell]


def scores(cells, edits=()) -> dict:
    """{grade_id: points scored, or the failure message} over every autograded cell of the
    solution notebook, hidden tests included, with ``edits`` ``(cell, old, new)`` made to the
    answer cells."""
    sources = {name: cells[name] for name in ANSWERS}
    for cell, old, new in edits:
        assert old in sources[cell], f"the solution cell {cell!r} no longer contains {old!r}"
        sources[cell] = sources[cell].replace(old, new)
    namespace = student_classes(cells["imports"], *sources.values())
    result = {}
    for grade_id, source, _ in graded_cells("tuning"):
        try:
            result[grade_id] = run_cell(source, dict(namespace), f"<test cell {grade_id}>")
        except CheckFailure as failure:
            result[grade_id] = str(failure)
    return result


FULL_MARKS = {grade_id: points for grade_id, _, points in graded_cells("tuning")}


def test_the_graded_cells_are_worth_the_registrys_points_and_run_the_checks_of_this_module():
    assert FULL_MARKS == dict(course.assignment("tuning").tests)
    assert sum(FULL_MARKS.values()) == 20
    sources = "\n".join(source for _, source, _ in graded_cells("tuning"))
    assert {c.__name__ for c in GP_CHECKS + EI_CHECKS} == set(re.findall(r"\b(check_\w+)\(\w+", sources))


def test_solution_passes_every_check(cells):
    assert scores(cells) == FULL_MARKS
    for seed in (1, 2, 3):
        for check in GP_CHECKS:
            assert check(student(cells, "gp_posterior"), seed=seed, points=2) == 2.0
        for check in EI_CHECKS:
            assert check(student(cells, "expected_improvement"), seed=seed, points=2) == 2.0


def test_the_references_own_results_pass_every_check():
    """The checks' data never needs what the reference does beyond the assignment (its jitter
    for a kernel matrix that is not positive definite): its results, returned by a function of
    the student's, pass."""
    reference_gp, reference_ei = tuning.gp_posterior, tuning.expected_improvement

    def gp_posterior(X, y, X_star, lengthscale=1.0, variance=1.0, noise=1e-6):
        return reference_gp(X, y, X_star, lengthscale, variance, noise)

    def expected_improvement(mean, std, best, xi=0.0):
        return reference_ei(mean, std, best, xi)

    for check in GP_CHECKS:
        assert check(gp_posterior) == 1.0
    assert checks.check_gp_posterior(gp_posterior, seed=5, cases=[(1, 1, 1), (7, 1, 3)], lengthscale=0.7,
                                     variance=0.6, noise=0.05, dtypes=(torch.float64, torch.float32)) == 1.0
    for check in EI_CHECKS:
        assert check(expected_improvement) == 1.0


def test_released_stubs_score_nothing():
    released = notebook_cells(ROOT / "exercises" / "tuning" / "tuning.ipynb")
    for cell, group in (("gp_posterior", GP_CHECKS), ("expected_improvement", EI_CHECKS)):
        fn = student(released, cell)
        for check in group:
            with pytest.raises(CheckFailure, match="NotImplementedError"):
                check(fn)


def test_coursekits_functions_do_not_count(cells):
    with pytest.raises(CheckFailure, match="must be your own function"):
        checks.check_gp_posterior(tuning.gp_posterior)
    with pytest.raises(CheckFailure, match="must be your own function"):
        checks.check_ei_minimization(tuning.expected_improvement)
    wrapper = student_classes("import coursekit.tuning\n"
                              "def gp_posterior(X, y, X_star, lengthscale=1.0, variance=1.0, noise=1e-6):\n"
                              "    return coursekit.tuning.gp_posterior(X, y, X_star, lengthscale, variance, noise)\n")
    with pytest.raises(CheckFailure, match="calls a ready-made Gaussian process"):
        checks.check_gp_noise(wrapper["gp_posterior"])
    assert tuning.gp_posterior is checks._ref_posterior           # restored after the check


def test_scipys_normal_and_scikit_learns_gaussian_process_do_not_count():
    """In the notebook; in the trusted grader neither can even be imported."""
    ei = student_classes("import scipy.stats\n"
                         "def expected_improvement(mean, std, best, xi=0.0):\n"
                         "    z = (best - mean - xi) / std\n"
                         "    Phi, phi = scipy.stats.norm.cdf(z), scipy.stats.norm.pdf(z)\n"
                         "    return (best - mean - xi) * torch.as_tensor(Phi) + std * torch.as_tensor(phi)\n")
    with pytest.raises(CheckFailure, match=r"calls a ready-made Gaussian process or expected improvement"):
        checks.check_ei_xi(ei["expected_improvement"])
    gp = student_classes("from sklearn.gaussian_process import GaussianProcessRegressor\n"
                         "from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel\n"
                         "def gp_posterior(X, y, X_star, lengthscale=1.0, variance=1.0, noise=1e-6):\n"
                         "    kernel = ConstantKernel(variance, 'fixed') * RBF(lengthscale, 'fixed')\n"
                         "    model = GaussianProcessRegressor(kernel, alpha=noise, optimizer=None).fit(X, y)\n"
                         "    mean, std = model.predict(X_star, return_std=True)\n"
                         "    return torch.as_tensor(mean), torch.as_tensor(std) ** 2\n")
    with pytest.raises(CheckFailure, match=r"calls a ready-made Gaussian process or expected improvement"):
        checks.check_gp_noise(gp["gp_posterior"])
    import scipy.stats
    assert scipy.stats.norm.cdf(0.0) == 0.5                       # restored after the check


@pytest.mark.parametrize("seed", range(3))
def test_the_mistake_free_replays_are_the_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    for n, m, d in [(1, 3, 1), (6, 9, 2), (10, 4, 3)]:
        X, y, X_star = checks._spread_case(n, m, d, gen)
        for lengthscale, variance, noise in [(1.0, 1.0, 0.0), (0.4, 2.0, 0.1)]:
            X_, X_star_ = X * lengthscale, X_star * lengthscale
            got = checks._posterior(X_, y, X_star_, lengthscale, variance, noise)
            expected = tuning.gp_posterior(X_, y, X_star_, lengthscale, variance, noise)
            for g, e in zip(got, expected):
                torch.testing.assert_close(g, e)
    mean, std = checks._ei_data((40,), gen, zeros=True)
    for xi in (0.0, 0.3):
        torch.testing.assert_close(checks._ei_variant(mean, std, 0.2, xi, None),
                                   tuning.expected_improvement(mean, std, 0.2, xi))


def test_the_checks_data_is_what_their_documentation_says():
    gen = torch.Generator().manual_seed(0)
    X = checks._spread(40, 2, 1.5, gen)
    assert torch.pdist(X).min() >= 0.7 * 1.5
    X, _, _ = checks._near_singular_case(gen)
    K = tuning.rbf_kernel(X, X) + 1e-10 * torch.eye(12, dtype=torch.float64)
    assert 1e9 < torch.linalg.cond(K) < 1e13


# --------------------------------------------------------------------------- mistakes

NOISE = "K = k(X, X) + noise * torch.eye(len(X), dtype=X.dtype)"
KERNEL = "return variance * torch.exp(-squared / (2 * lengthscale ** 2))"
CLAMPED = "var = (variance - (v ** 2).sum(0)).clamp(min=0)"
ALPHA = "alpha = torch.cholesky_solve(y[:, None], L)[:, 0]"
IMPROVEMENT = "improvement = best - mean - xi"
SAFE = "safe_std = torch.where(known, torch.ones_like(std), std)"
PICK = "return torch.where(known, improvement.clamp(min=0), ei)"
INVERSE = [(ALPHA, "K_inv = torch.linalg.inv(K)\n    alpha = K_inv @ y"),
           (CLAMPED, "var = (variance - (K_star * (K_inv @ K_star)).sum(0)).clamp(min=0)")]

MISTAKES = [
    # (check, answer cell, edits, message pattern)
    (checks.check_gp_noise, "gp_posterior", [(NOISE, "K = k(X, X)")], r"the noise is missing from the diagonal"),
    (checks.check_gp_noise, "gp_posterior", [(NOISE, "K = k(X, X) + noise")],
     r"the noise is added to every entry of K"),
    (checks.check_gp_noise, "gp_posterior", [("+ noise * torch.eye", "+ noise ** 2 * torch.eye")],
     r"the noise is squared: noise is already a variance"),
    (checks.check_gp_noise, "gp_posterior", [("return mean, var", "return mean, var + noise")],
     r"the noise is added to the returned variance"),
    (checks.check_gp_lengthscale, "gp_posterior", [("lengthscale ** 2))", "lengthscale ** 4))")],
     r"the lengthscale is squared twice"),
    (checks.check_gp_lengthscale, "gp_posterior", [("lengthscale ** 2))", "lengthscale))")],
     r"the lengthscale is not squared"),
    (checks.check_gp_posterior, "gp_posterior", [("(2 * lengthscale ** 2)", "lengthscale ** 2")],
     r"the factor 2 is missing"),
    (checks.check_gp_posterior, "gp_posterior",
     [("squared = ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)", "squared = torch.cdist(A, B)")],
     r"the distance is not squared"),
    (checks.check_gp_posterior, "gp_posterior", [(KERNEL, "return torch.exp(-squared / (2 * lengthscale ** 2))"),
                                                 (CLAMPED, "var = (1 - (v ** 2).sum(0)).clamp(min=0)")],
     r"the kernel's variance is ignored"),
    (checks.check_gp_posterior, "gp_posterior", [(CLAMPED, "var = (1 - (v ** 2).sum(0)).clamp(min=0)")],
     r"the prior variance is taken as 1"),
    (checks.check_gp_posterior, "gp_posterior", [("return mean, var", "return mean, var.sqrt()")],
     r"it returns the standard deviation"),
    (checks.check_gp_posterior, "gp_posterior",
     [(ALPHA, "alpha = torch.cholesky_solve((y - y.mean())[:, None], L)[:, 0]"),
      ("mean = K_star.T @ alpha", "mean = K_star.T @ alpha + y.mean()")], r"the mean of y is used as the prior mean"),
    (checks.check_gp_posterior, "gp_posterior", [("mean = K_star.T @ alpha", "mean = (K_star.T @ alpha)[:, None]")],
     r"mean has shape \(8, 1\), expected \(8,\)"),
    (checks.check_gp_posterior, "gp_posterior", [("return mean, var", "return [mean, var, L]")],
     r"should return the tuple \(mean, var\), but returned a list of length 3"),
    (checks.check_gp_posterior, "gp_posterior", [("K_star = k(X, X_star)", "X_star -= 0.5\n    K_star = k(X, X_star)")],
     r"changed its argument X_star in place"),
    (checks.check_gp_nonnegative, "gp_posterior", [(CLAMPED, "var = variance - (v ** 2).sum(0)")],
     r"returned a negative variance.*Likely mistake: the posterior variance is not clamped at 0"),
    (checks.check_gp_near_singular, "gp_posterior", INVERSE,
     r"the variances are off by up to .* on a nearly singular kernel matrix \(condition number 1\.\de\+11\)"
     r".*Likely mistake: an explicit inverse"),
    (checks.check_gp_near_singular, "gp_posterior", [(NOISE, "K = k(X, X)")],
     r"raised .*not positive-definite.*\nLikely cause: k\(X, X\) of 12 inputs .* only the noise variance"),
    (checks.check_ei_minimization, "expected_improvement", [(IMPROVEMENT, "improvement = mean - best - xi")],
     r"the improvement is computed for maximization"),
    (checks.check_ei_minimization, "expected_improvement", [("z = improvement / safe_std", "z = -improvement / safe_std")],
     r"z has the wrong sign"),
    (checks.check_ei_minimization, "expected_improvement",
     [("ei = improvement * Phi + safe_std * phi", "ei = improvement * phi + safe_std * Phi")], r"Phi and phi are swapped"),
    (checks.check_ei_minimization, "expected_improvement",
     [("ei = improvement * Phi + safe_std * phi", "ei = improvement * Phi")], r"the exploration term is missing"),
    (checks.check_ei_zero_std, "expected_improvement", [(SAFE, "safe_std = std"), (PICK, "return ei")],
     r"returned nan where std is 0 .*\nLikely mistake: NaN at std = 0"),
    (checks.check_ei_zero_std, "expected_improvement", [(PICK, "return torch.where(known, 0.0, ei)")],
     r"where std is 0 it returns 0"),
    (checks.check_ei_zero_std, "expected_improvement", [(PICK, "return torch.where(known, improvement, ei)")],
     r"where std is 0 it returns the improvement itself"),
    (checks.check_ei_xi, "expected_improvement", [(IMPROVEMENT, "improvement = best - mean")], r"xi is ignored"),
    (checks.check_ei_xi, "expected_improvement", [(IMPROVEMENT, "improvement = best - mean + xi")],
     r"xi has the wrong sign"),
    (checks.check_ei_xi, "expected_improvement",
     [(IMPROVEMENT, "improvement = best - mean"), ("z = improvement / safe_std", "z = (improvement - xi) / safe_std")],
     r"xi is used in z but not in the improvement"),
    (checks.check_ei_xi, "expected_improvement",
     [("z = improvement / safe_std", "z = (best - mean) / safe_std")], r"xi is used in the improvement but not in z"),
]


@pytest.mark.parametrize("check, cell, edits, pattern", MISTAKES,
                         ids=[f"{m[0].__name__}-{i}" for i, m in enumerate(MISTAKES)])
def test_each_mistake_fails_its_check_with_a_teaching_message(cells, check, cell, edits, pattern):
    with pytest.raises(CheckFailure, match=re.compile(pattern, re.S | re.M)):
        check(student(cells, cell, *edits))


def simulated_gp(mistake):
    def gp_posterior(X, y, X_star, lengthscale=1.0, variance=1.0, noise=1e-6):
        result = checks._posterior(X, y, X_star, lengthscale, variance, noise, mistake)
        if result is None:
            raise RuntimeError("linalg.cholesky: the input is not positive-definite")
        return tuple(t.to(X.dtype) for t in result)
    gp_posterior.__module__ = "__main__"
    return gp_posterior


def simulated_ei(mistake):
    def expected_improvement(mean, std, best, xi=0.0):
        return checks._ei_variant(mean, std, best, xi, mistake).to(mean.dtype)
    expected_improvement.__module__ = "__main__"
    return expected_improvement


@pytest.mark.parametrize("mistake", checks.MISTAKES)
def test_every_known_posterior_mistake_is_named_by_a_visible_check(mistake):
    messages = failure_messages(simulated_gp(mistake), GP_CHECKS)
    assert any(f"Likely mistake: {checks.MISTAKES[mistake]}" in m for m in messages), messages


@pytest.mark.parametrize("mistake", checks.EI_MISTAKES)
def test_every_known_ei_mistake_is_named_by_a_visible_check(mistake):
    messages = failure_messages(simulated_ei(mistake), EI_CHECKS)
    assert any(f"Likely mistake: {checks.EI_MISTAKES[mistake]}" in m for m in messages), messages


# --------------------------------------------------------------------------- rounding, seed after seed

UNCLAMPED = {
    "solution without clamp": [(CLAMPED, "var = variance - (v ** 2).sum(0)")],
    "vector_norm squared": [(CLAMPED, "var = variance - torch.linalg.vector_norm(v, dim=0) ** 2")],
    "diagonal of the covariance": [(CLAMPED, "var = torch.diagonal(k(X_star, X_star) - v.T @ v)")],
    "torch.linalg.solve": [(CLAMPED, "var = variance - (K_star * torch.linalg.solve(K, K_star)).sum(0)")],
}
INVERSES = {
    "inv": INVERSE,
    "cholesky_inverse": [(ALPHA, "K_inv = torch.cholesky_inverse(L)\n    alpha = K_inv @ y"),
                         (CLAMPED, "var = (variance - torch.diag(K_star.T @ K_inv @ K_star)).clamp(min=0)")],
    "pinv": [(ALPHA, "K_inv = torch.linalg.pinv(K, hermitian=True)\n    alpha = K_inv @ y"),
             (CLAMPED, "var = (variance - (K_star * (K_inv @ K_star)).sum(0)).clamp(min=0)")],
    "inverse, diagonal": [(ALPHA, "K_inv = torch.inverse(K)\n    alpha = K_inv @ y"),
                          (CLAMPED, "var = torch.diag(k(X_star, X_star) - K_star.T @ K_inv @ K_star).clamp(min=0)")],
}
CORRECT = {
    "solution": [],
    "torch.linalg.solve": [(ALPHA, "alpha = torch.linalg.solve(K, y)"),
                           (CLAMPED, "var = (variance - (K_star * torch.linalg.solve(K, K_star)).sum(0)).clamp(min=0)")],
    "|a|^2 + |b|^2 - 2ab": [("squared = ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)",
                             "squared = ((A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2 * A @ B.T).clamp(min=0)")],
    "cdist": [("squared = ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)", "squared = torch.cdist(A, B) ** 2")],
    "cholesky_solve for the variance": [(CLAMPED, "var = (variance - (K_star * torch.cholesky_solve(K_star, L)).sum(0)).clamp(min=0)")],
}


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [range(0, 4), range(4, 8), range(8, 12)], ids=lambda r: f"seeds {r.start}-{r.stop - 1}")
def test_the_rounding_checks_hold_on_every_seed(cells, seeds):
    """An unclamped variance goes below 0, and an explicit inverse loses more than the
    tolerance, on every seed tried and in every style of the mistake; correct styles pass.
    (Measured on 200 seeds when the checks were written; here a few, to keep it so.)"""
    for seed in seeds:
        for style, edits in UNCLAMPED.items():
            with pytest.raises(CheckFailure, match="not clamped at 0"):
                checks.check_gp_nonnegative(student(cells, "gp_posterior", *edits), seed=seed)
        for style, edits in INVERSES.items():
            with pytest.raises(CheckFailure, match="explicit inverse"):
                checks.check_gp_near_singular(student(cells, "gp_posterior", *edits), seed=seed)
        for style, edits in CORRECT.items():
            fn = student(cells, "gp_posterior", *edits)
            assert checks.check_gp_near_singular(fn, seed=seed) == 1.0, (style, seed)
            assert checks.check_gp_nonnegative(fn, seed=seed) == 1.0, (style, seed)


# --------------------------------------------------------------------------- the pipeline test's submissions

def test_submissions_of_the_pipeline_test_fail_the_cells_it_expects(cells):
    """tests/test_nbgrader.py grades SUBMISSIONS["tuning"] through nbgrader (slow); here the
    same edits go through the same cells directly, so its expectations stay true."""
    tree = ast.parse((ROOT / "tests" / "test_nbgrader.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Subscript)
                and ast.literal_eval(n.targets[0].slice) == "tuning")
    submissions = ast.literal_eval(node.value)
    assert {"correct", "noise_missing_from_the_diagonal_and_ei_for_maximization", "explicit_inverse",
            "lengthscale_squared_twice_and_ei_nan_at_zero_std"} <= set(submissions)
    for name, (edits, failing) in submissions.items():
        assert all(cell in ANSWERS for cell, _, _ in edits)
        result = scores(cells, edits)
        assert {k for k, v in result.items() if v != FULL_MARKS[k]} == failing, (name, result)
