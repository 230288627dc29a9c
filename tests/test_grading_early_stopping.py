"""coursekit.grading.early_stopping: the solution passes, the released stub fails, each
classic mistake loses a visible check with a message that names it (in the words of the
mode at hand), and correct solutions written in other styles score every point of every
visible and hidden check cell, run exactly as in the notebook."""
import ast
import json
import random
import re

import pytest

from coursekit import course, regularization
from coursekit.grading import CheckFailure
from coursekit.grading import early_stopping as checks
from conftest import ROOT, failure_messages, notebook_cells, solution_cells, student_classes, with_mistake

SOLUTION = ROOT / "solutions" / "early_stopping" / "early_stopping.ipynb"
CHECKS = [checks.check_patience, checks.check_min_delta, checks.check_mode_max, checks.check_best,
          checks.check_restore_best, checks.check_arguments, checks.check_random_sequences]
VISIBLE_RULE_CHECKS = [checks.check_patience, checks.check_min_delta, checks.check_mode_max, checks.check_best]


@pytest.fixture(scope="module")
def cells():
    return solution_cells("early_stopping")


def student_class(cells, *edits):
    return with_mistake(cells, "early_stopping", *edits, setup=("imports",))["EarlyStopping"]


def graded_cells():
    """The autograded cells of the solution notebook, hidden tests included: (id, points, source)."""
    for cell in json.loads(SOLUTION.read_text())["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if cell["cell_type"] == "code" and meta.get("grade"):
            yield meta["grade_id"], meta["points"], "".join(cell["source"])


def run_cell(namespace: dict, source: str):
    """Run a check cell as the notebook does; the value of its last expression (its score)."""
    tree = ast.parse(source)
    last = tree.body.pop()
    exec(compile(tree, "<check cell>", "exec"), namespace)
    return eval(compile(ast.Expression(last.value), "<check cell>", "eval"), namespace)


def scores(cls) -> dict:
    """{grade_id: points scored, or the failure message} over every autograded cell."""
    result = {}
    for grade_id, _, source in graded_cells():
        namespace = student_classes(notebook_cells(SOLUTION)["imports"])
        namespace["EarlyStopping"] = cls
        try:
            result[grade_id] = run_cell(namespace, source)
        except CheckFailure as failure:
            result[grade_id] = str(failure)
    return result


FULL_MARKS = {grade_id: float(points) for grade_id, points, _ in graded_cells()}


def test_the_graded_cells_are_worth_the_registrys_points_and_run_the_checks_of_this_module():
    assert FULL_MARKS == dict(course.assignment("early_stopping").tests)
    sources = "\n".join(source for _, _, source in graded_cells())
    assert {c.__name__ for c in CHECKS} == set(re.findall(r"\b(check_\w+)\(EarlyStopping", sources))


def test_solution_passes_every_check(cells):
    cls = student_class(cells)
    for check in CHECKS:
        assert check(cls, points=2) == 2.0
    for seed in range(5):
        assert checks.check_random_sequences(cls, seed=seed, runs=100) == 1.0
    assert scores(cls) == FULL_MARKS


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


def test_no_check_sequence_sits_on_the_min_delta_boundary():
    with pytest.raises(RuntimeError, match="boundary"):
        checks._audit([1.0, 0.98], patience=1, min_delta=0.02, mode="min")
    with pytest.raises(RuntimeError, match="infinite"):
        checks._audit([1.0, float("inf")], patience=1, min_delta=0.0, mode="min")
    checks._audit([2.0, 1.75], patience=1, min_delta=0.25, mode="min")   # exact binary fractions: fair
    for seed in list(range(20)) + [1597]:                                # _compare audits every sequence
        checks.check_random_sequences(student_class(solution_cells("early_stopping")), seed=seed, runs=100)


# --------------------------------------------------------------------------- mistakes

STEP_RETURN = "return self.num_bad_epochs >= self.patience"
IMPROVED = "self.best, self.best_epoch, self.num_bad_epochs = value, epoch, 0"
NEVER_STOPS = ("            return False             # an improving step never stops\n"
               "        self.num_bad_epochs += 1\n")
MISTAKES = [
    # (check, edits, message pattern)
    (checks.check_patience, [(STEP_RETURN, "return self.num_bad_epochs > self.patience")], r"stops one step late"),
    (checks.check_patience, [(STEP_RETURN, "return self.num_bad_epochs >= self.patience - 1")], r"stops one step early"),
    (checks.check_patience, [(NEVER_STOPS, "        else:\n            self.num_bad_epochs += 1\n")],
     r"with patience=0 it stopped on a step that improved: an improving step never stops"),
    (checks.check_patience, [(IMPROVED, "self.best, self.best_epoch = value, epoch")], r"num_bad_epochs is not reset"),
    (checks.check_min_delta, [("value < self.best - self.min_delta", "value < self.best")],
     r"min_delta is ignored: in mode 'min' a value improves only if value < best - min_delta"),
    (checks.check_min_delta, [("value > self.best + self.min_delta", "value > self.best")],
     r"min_delta is ignored: in mode 'max' a value improves only if value > best \+ min_delta\.$"),
    (checks.check_min_delta, [("value < self.best - self.min_delta", "value < self.best + self.min_delta"),
                              ("value > self.best + self.min_delta", "value > self.best - self.min_delta")],
     r"min_delta is applied in the wrong direction: in mode 'min'"),
    (checks.check_min_delta, [("value > self.best + self.min_delta", "value > self.best - self.min_delta")],
     r"in mode 'max' an improvement must beat best by more than min_delta \(value > best \+ min_delta\), "
     r"not value > best - min_delta"),
    (checks.check_mode_max, [('elif self.mode == "min":', "elif True:")], r"mode 'max' is treated like 'min'"),
    (checks.check_best, [(IMPROVED, "self.best, self.num_bad_epochs = value, 0\n            if self.best_epoch is None:\n"
                                    "                self.best_epoch = epoch")], r"best_epoch is not updated"),
    (checks.check_best, [("value, epoch, 0", "value, epoch + 1, 0")], r"best_epoch counts from 1"),
    (checks.check_best, [("if math.isnan(value):\n            improved = False\n        elif self.best is None:",
                          "if self.best is None or math.isnan(self.best) or math.isnan(value):")],
     r"a NaN value is taken as an improvement"),
    (checks.check_best, [("if math.isnan(value):\n            improved = False\n        elif self.best is None:\n"
                          "            improved = True\n",
                          "if self.best is None:\n            improved = True\n        elif math.isnan(value):\n"
                          "            improved = False\n")], r"a NaN first value became best"),
    # a starting sentinel that leaks out: caught before the first step, by every rule check
    (checks.check_patience, [("self.best_epoch = None       # the 0-based", "self.best_epoch = -1       # the 0-based")],
     r"right after construction.*best_epoch -1 \(expected None\)\nLikely mistake: best_epoch must be None"),
    (checks.check_best, [("self.best = None             # the best", "self.best = math.inf if mode == 'min' else -math.inf  #"),
                         ("elif self.best is None:\n            improved = True\n        elif", "elif")],
     r"best inf \(expected None\)\nLikely mistake: best must be None until a value improves"),
    (checks.check_restore_best, [("{k: v.detach().clone() for k, v in model.state_dict().items()}", "model.state_dict()")],
     r"still has its latest weights.*state_dict\(\) returns references"),
    (checks.check_arguments, [("if mode not in (\"min\", \"max\"):\n            raise", "if False:\n            raise")],
     r"EarlyStopping\(mode='maximum'\) returned an EarlyStopping instead of raising ValueError"),
    (checks.check_arguments, [("got {patience}", "got a bad value")], r"names the bad value \(-1\)"),
    (checks.check_random_sequences, [(STEP_RETURN, "return self.num_bad_epochs > self.patience")], r"stops one step late"),
    (checks.check_random_sequences, [(NEVER_STOPS, "        else:\n            self.num_bad_epochs += 1\n")],
     r"with patience=0 it stopped on a step that improved"),
]


@pytest.mark.parametrize("check, edits, pattern", MISTAKES, ids=[f"{m[0].__name__}-{i}" for i, m in enumerate(MISTAKES)])
def test_each_mistake_fails_its_check_with_a_teaching_message(cells, check, edits, pattern):
    with pytest.raises(CheckFailure, match=re.compile(pattern, re.S | re.M)):
        check(student_class(cells, *edits))


def test_a_min_mode_hint_is_never_given_for_mode_max(cells):
    cls = student_class(cells, ("value > self.best + self.min_delta", "value > self.best"))
    with pytest.raises(CheckFailure) as failure:
        checks.check_min_delta(cls)
    assert "mode='max'" in str(failure.value) and "best - min_delta" not in str(failure.value)


def test_a_wrong_attribute_is_reported_by_name(cells):
    cls = student_class(cells, ("self.best_epoch = None       # the 0-based", "self.best_ep = None       # the 0-based"),
                        (IMPROVED, "self.best, self.best_ep, self.num_bad_epochs = value, epoch, 0"))
    with pytest.raises(CheckFailure, match="right after construction the object has no attribute 'best_epoch'"):
        checks.check_patience(cls)


def simulated(mistake):
    """A class that makes exactly one of the simulated mistakes."""
    class EarlyStopping:
        def __init__(self, patience=5, min_delta=0.0, mode="min", restore_best=True):
            self.options, self.values = dict(patience=patience, min_delta=min_delta, mode=mode), []
            self.best, self.best_epoch, self.num_bad_epochs = None, None, 0

        def step(self, value, model=None):
            self.values.append(value)
            stop, self.best, self.best_epoch, self.num_bad_epochs = checks._simulate(self.values, mistake=mistake,
                                                                                     **self.options)[-1]
            return stop
    EarlyStopping.__module__ = "__main__"
    return EarlyStopping


@pytest.mark.parametrize("mistake", checks.MISTAKES)
def test_every_known_mistake_is_named_by_a_visible_check(mistake):
    """Nothing is left for the hidden tests to find first: each mistake fails a visible check,
    whose message explains it (in the words of the mode of that sequence)."""
    cls = simulated(mistake)
    messages = failure_messages(cls, VISIBLE_RULE_CHECKS)
    explanations = {checks._explain(mistake, mode) for mode in ("min", "max")}
    assert any(e in m for e in explanations for m in messages), messages
    with pytest.raises(CheckFailure):
        checks.check_random_sequences(cls, seed=1597, runs=60)


def test_submissions_of_the_pipeline_test_fail_the_cells_it_expects(cells):
    """tests/test_nbgrader.py grades SUBMISSIONS["early_stopping"] through nbgrader (slow);
    here the same edits go through the same cells directly, so its expectations stay true."""
    tree = ast.parse((ROOT / "tests" / "test_nbgrader.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Subscript)
                and ast.literal_eval(n.targets[0].slice) == "early_stopping")
    submissions = ast.literal_eval(node.value)
    assert {"correct", "patience_0_stops_on_improvement", "best_epoch_minus_1_before_the_first_value"} <= set(submissions)
    for name, (edits, failing) in submissions.items():
        assert all(cell == "early_stopping" for cell, _, _ in edits)
        result = scores(student_class(cells, *[(old, new) for _, old, new in edits]))
        assert {k for k, v in result.items() if v != FULL_MARKS[k]} == failing, (name, result)


# --------------------------------------------------------------------------- fairness

# Correct solutions in other styles than the notebook's: each must score every point.
SENTINELS_INSIDE = '''
class EarlyStopping:
    """+-inf as the starting best inside, None shown outside; value + min_delta < best (Keras's form)."""
    def __init__(self, patience=5, min_delta=0.0, mode="min", restore_best=True):
        if mode not in ("min", "max"):
            raise ValueError(f"unknown mode {mode}")
        if patience < 0 or min_delta < 0:
            raise ValueError(f"patience ({patience}) and min_delta ({min_delta}) must be >= 0")
        self.patience, self.min_delta, self.mode, self.restore_best = patience, min_delta, mode, restore_best
        self._best = math.inf if mode == "min" else -math.inf
        self._best_epoch = -1
        self._epoch = 0
        self._state = None
        self.num_bad_epochs = 0

    @property
    def best(self):
        return None if self._best_epoch < 0 else self._best

    @property
    def best_epoch(self):
        return None if self._best_epoch < 0 else self._best_epoch

    def step(self, value, model=None):
        if self.mode == "min":
            better = value + self.min_delta < self._best      # False for NaN
        else:
            better = value - self.min_delta > self._best
        self._epoch += 1
        if not better:
            self.num_bad_epochs += 1
            return self.num_bad_epochs >= self.patience
        self._best, self._best_epoch, self.num_bad_epochs = value, self._epoch - 1, 0
        if model is not None and self.restore_best:
            self._state = {k: v.clone() for k, v in model.state_dict().items()}
        return False

    def restore(self, model):
        model.load_state_dict(self._state)
        return model
'''

KERAS_WAIT = '''
import copy

class EarlyStopping:
    """Keras's order (wait += 1 first, reset on improvement), `value != value`, best - value > min_delta."""
    def __init__(self, patience=5, min_delta=0.0, mode="min", restore_best=True):
        for name, number in (("patience", patience), ("min_delta", min_delta)):
            if number < 0:
                raise ValueError(f"{name} must not be negative, got {number}")
        if mode != "min" and mode != "max":
            raise ValueError(f"mode {mode!r} is neither 'min' nor 'max'")
        self.patience, self.min_delta, self.mode, self.restore_best = patience, min_delta, mode, restore_best
        self.best = self.best_epoch = None
        self.wait, self.epoch, self.weights = 0, -1, None

    @property
    def num_bad_epochs(self):
        return self.wait

    def step(self, value, model=None):
        self.epoch += 1
        self.wait += 1
        if value != value:                                     # NaN
            return self.wait >= self.patience
        if self.mode == "min":
            gain = None if self.best is None else self.best - value
        else:
            gain = None if self.best is None else value - self.best
        if gain is None or gain > self.min_delta:
            self.best, self.best_epoch, self.wait = value, self.epoch, 0
            if model is not None and self.restore_best:
                self.weights = copy.deepcopy(model.state_dict())
            return False
        return self.wait >= self.patience

    def restore(self, model):
        model.load_state_dict(self.weights)
        return model
'''

SIGNED_COUNTER = '''
class EarlyStopping:
    """One comparison for both modes (a sign), a `counter`, every value kept in a list."""
    def __init__(self, patience=5, min_delta=0.0, mode="min", restore_best=True):
        if mode not in {"min", "max"} or patience < 0 or min_delta < 0:
            raise ValueError(f"bad arguments: mode={mode}, patience={patience}, min_delta={min_delta}")
        self.sign = 1.0 if mode == "min" else -1.0
        self.patience, self.min_delta, self.restore_best = patience, min_delta, restore_best
        self.history, self.counter, self.best_index, self.saved = [], 0, None, None

    best = property(lambda self: None if self.best_index is None else self.history[self.best_index])
    best_epoch = property(lambda self: self.best_index)
    num_bad_epochs = property(lambda self: self.counter)

    def step(self, value, model=None):
        self.history.append(float(value))
        improved = not math.isnan(value) and (
            self.best is None or self.sign * (self.best - value) > self.min_delta)
        if improved:
            self.best_index, self.counter = len(self.history) - 1, 0
            if model is not None and self.restore_best:
                self.saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.counter += 1
        return not improved and self.counter >= self.patience

    def restore(self, model):
        model.load_state_dict(self.saved)
        return model
'''

TORCH_TENSORS = '''
class EarlyStopping:
    """NaN tested with torch, the best kept as a 0-dim tensor, the comparison as value - best < -min_delta."""
    def __init__(self, patience=5, min_delta=0.0, mode="min", restore_best=True):
        if mode not in ("min", "max"):
            raise ValueError("mode must be 'min' or 'max', not " + str(mode))
        if patience < 0:
            raise ValueError("patience must be >= 0, not " + str(patience))
        if min_delta < 0:
            raise ValueError("min_delta must be >= 0, not " + str(min_delta))
        self.patience, self.min_delta, self.mode, self.restore_best = patience, min_delta, mode, restore_best
        self.best, self.best_epoch, self.num_bad_epochs, self.calls, self.state = None, None, 0, 0, None

    def step(self, value, model=None):
        value = torch.tensor(value, dtype=torch.float64)
        self.calls += 1
        if torch.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "min":
            improved = bool(value - self.best < -self.min_delta)
        else:
            improved = bool(value - self.best > self.min_delta)
        if improved:
            self.best, self.best_epoch, self.num_bad_epochs = value, self.calls - 1, 0
            if model is not None and self.restore_best:
                self.state = {k: v.clone() for k, v in model.state_dict().items()}
            return False
        self.num_bad_epochs += 1
        return bool(self.num_bad_epochs >= self.patience)

    def restore(self, model):
        model.load_state_dict(self.state)
        return model
'''

FAIR = {"sentinels inside, None outside": SENTINELS_INSIDE, "Keras's wait, value != value": KERAS_WAIT,
        "a sign and a counter": SIGNED_COUNTER, "torch tensors": TORCH_TENSORS}


@pytest.mark.parametrize("style", FAIR)
def test_correct_solutions_in_other_styles_score_every_point(cells, style):
    cls = student_classes(cells["imports"], FAIR[style])["EarlyStopping"]
    assert scores(cls) == FULL_MARKS
    for seed in range(10):
        assert checks.check_random_sequences(cls, seed=seed, runs=100) == 1.0
