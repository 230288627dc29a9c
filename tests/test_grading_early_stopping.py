"""coursekit.grading.early_stopping: the solution passes, the released stub fails, and each
classic mistake loses its check with a message that names it."""
import random

import pytest

from coursekit import regularization
from coursekit.grading import CheckFailure
from coursekit.grading import early_stopping as checks
from conftest import ROOT, notebook_cells, solution_cells, with_mistake

CHECKS = [checks.check_patience, checks.check_min_delta, checks.check_mode_max, checks.check_best,
          checks.check_restore_best, checks.check_arguments, checks.check_random_sequences]


@pytest.fixture(scope="module")
def cells():
    return solution_cells("early_stopping")


def student_class(cells, *edits):
    return with_mistake(cells, "early_stopping", *edits, setup=("imports",))["EarlyStopping"]


def test_solution_passes_every_check(cells):
    cls = student_class(cells)
    for check in CHECKS:
        assert check(cls, points=2) == 2.0
    for seed in range(5):
        assert checks.check_random_sequences(cls, seed=seed, runs=100) == 1.0


def test_released_stub_scores_nothing():
    cls = student_class(notebook_cells(ROOT / "exercises" / "early_stopping" / "early_stopping.ipynb"))
    for check in CHECKS:
        with pytest.raises(CheckFailure, match="NotImplementedError"):
            check(cls)


def test_coursekits_class_does_not_count():
    with pytest.raises(CheckFailure, match="must be your own function"):
        checks.check_patience(regularization.EarlyStopping)


@pytest.mark.parametrize("seed", range(3))
def test_the_mistake_free_replay_is_the_reference(seed):
    rng = random.Random(seed)
    for _ in range(200):
        values = [rng.choice([float("nan"), 1.0, 0.9, 0.95, 1.1, 0.5, 0.52]) for _ in range(rng.randint(1, 15))]
        options = dict(patience=rng.randint(0, 4), min_delta=rng.choice([0.0, 0.03, 0.1]), mode=rng.choice(["min", "max"]))
        ref = regularization.EarlyStopping(**options)
        expected = [(ref.step(v), ref.best, ref.best_epoch, ref.num_bad_epochs) for v in values]
        assert checks._simulate(values, **options) == expected


STEP_RETURN = "return self.num_bad_epochs >= self.patience"
MISTAKES = [
    # (check, edits, message pattern)
    (checks.check_patience, [(STEP_RETURN, "return self.num_bad_epochs > self.patience")], r"stops one step late"),
    (checks.check_patience, [(STEP_RETURN, "return self.num_bad_epochs >= self.patience - 1")], r"stops one step early"),
    (checks.check_patience, [("self.best, self.best_epoch, self.num_bad_epochs = value, self.steps, 0",
                              "self.best, self.best_epoch = value, self.steps")], r"num_bad_epochs is not reset"),
    (checks.check_min_delta, [("value < self.best - self.min_delta", "value < self.best")], r"min_delta is ignored"),
    (checks.check_min_delta, [("value < self.best - self.min_delta", "value < self.best + self.min_delta"),
                              ("value > self.best + self.min_delta", "value > self.best - self.min_delta")],
     r"min_delta is applied in the wrong direction"),
    (checks.check_mode_max, [('elif self.mode == "min":', "elif True:")], r"mode 'max' is treated like 'min'"),
    (checks.check_best, [("self.best, self.best_epoch, self.num_bad_epochs = value, self.steps, 0",
                          "self.best, self.num_bad_epochs = value, 0\n            if self.best_epoch is None:\n"
                          "                self.best_epoch = self.steps")], r"best_epoch is not updated"),
    (checks.check_best, [("value, self.steps, 0", "value, self.steps + 1, 0")], r"best_epoch counts from 1"),
    (checks.check_best, [("if math.isnan(value):\n            improved = False\n        elif self.best is None:",
                          "if self.best is None or math.isnan(self.best) or math.isnan(value):")],
     r"a NaN value is taken as an improvement"),
    (checks.check_restore_best, [("{k: v.detach().clone() for k, v in model.state_dict().items()}", "model.state_dict()")],
     r"still has its latest weights.*state_dict\(\) returns references"),
    (checks.check_arguments, [("if mode not in (\"min\", \"max\"):\n            raise", "if False:\n            raise")],
     r"EarlyStopping\(mode='maximum'\) returned an EarlyStopping instead of raising ValueError"),
    (checks.check_arguments, [("got {patience}", "got a bad value")], r"names the bad value \(-1\)"),
    (checks.check_random_sequences, [(STEP_RETURN, "return self.num_bad_epochs > self.patience")], r"stops one step late"),
]


@pytest.mark.parametrize("check, edits, pattern", MISTAKES, ids=[f"{m[0].__name__}-{i}" for i, m in enumerate(MISTAKES)])
def test_each_mistake_fails_its_check_with_a_teaching_message(cells, check, edits, pattern):
    with pytest.raises(CheckFailure, match=pattern):
        check(student_class(cells, *edits))


def test_a_wrong_attribute_is_reported_by_name(cells):
    cls = student_class(cells, ("self.best_epoch = None       # the 0-based", "self.best_ep = None       # the 0-based"),
                        ("self.best, self.best_epoch, self.num_bad_epochs = value, self.steps, 0",
                         "self.best, self.best_ep, self.num_bad_epochs = value, self.steps, 0"))
    with pytest.raises(CheckFailure, match="no attribute 'best_epoch'"):
        checks.check_patience(cls)
