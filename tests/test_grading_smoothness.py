"""coursekit.grading.smoothness: the solution passes, the released stub fails, coursekit's
versions do not count, and each classic mistake loses its check with a message naming it."""
import pytest

from coursekit import smoothness
from coursekit.grading import CheckFailure
from coursekit.grading import smoothness as checks
from conftest import ROOT, notebook_cells, solution_cells, with_mistake

CHECKS = {"internal_covariate_shift": checks.check_ics, "landscape_probe": checks.check_probe}


@pytest.fixture(scope="module")
def cells():
    return solution_cells("smoothness")


def student(cells, cell, *edits):
    return with_mistake(cells, cell, *edits, setup=("imports",))[cell]


@pytest.mark.parametrize("seed", range(4))
def test_solution_passes_every_check(cells, seed):
    for cell, check in CHECKS.items():
        assert check(student(cells, cell), seed=seed, points=3) == 3.0


def test_released_stub_scores_nothing():
    released = notebook_cells(ROOT / "exercises" / "smoothness" / "smoothness.ipynb")
    for cell, check in CHECKS.items():
        with pytest.raises(CheckFailure, match="NotImplementedError"):
            check(student(released, cell))


@pytest.mark.parametrize("cell", list(CHECKS))
def test_coursekits_measurement_does_not_count(cell):
    with pytest.raises(CheckFailure, match="must be your own function"):
        CHECKS[cell](getattr(smoothness, cell))

    def wrapper(*args):
        return getattr(smoothness, cell)(*args)
    with pytest.raises(CheckFailure, match="calls a ready-made measurement"):
        CHECKS[cell](wrapper)


MISTAKES = [
    # (cell, edits, message pattern)
    ("internal_covariate_shift", [("if j < i else old[j]", "")], r"G' was computed after updating every layer"),
    ("internal_covariate_shift", [("if j < i else old[j]", "if j <= i + 1 else old[j]")], r"returned wrong values"),
    ("internal_covariate_shift", [("    model.load_state_dict(state)                   # parameters and BN running statistics\n", "")],
     r"changed the model: 0.weight"),
    ("internal_covariate_shift", [("state = copy.deepcopy(model.state_dict())", "state = {k: v.clone() for k, v in model.named_parameters()}"),
                                  ("model.load_state_dict(state)", "model.load_state_dict(state, strict=False)")],
     r"changed the model: 1.running_mean.*BatchNorm running statistics"),
    ("internal_covariate_shift", [("return torch.stack(l2), torch.stack(cosine)", "return torch.stack(l2)")],
     r"should return a tuple \(l2, cosine\)"),
    ("landscape_probe", [("p.copy_(w - eta * g)", "p.copy_(w + eta * g)")], r"the probe steps along \+g"),
    ("landscape_probe", [("    model.load_state_dict(state)\n", "")], r"changed the model.*leave the model exactly as it was"),
    ("landscape_probe", [("state = copy.deepcopy(model.state_dict())", "state = copy.deepcopy(model.state_dict())\n    model.eval()"),
                         ("model.load_state_dict(state)", "model.load_state_dict(state)\n    model.train()")],
     r"ran the BatchNorm network in the other mode"),
    ("landscape_probe", [("state = copy.deepcopy(model.state_dict())", "state = copy.deepcopy(model.state_dict())\n    model.train()")],
     r"changed the model's training/evaluation mode"),
    ("landscape_probe", [("(changes / distances).max().item()", "changes.max().item()")], r"beta is the largest grad_change"),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("cell, edits, pattern", MISTAKES, ids=[f"{m[0]}-{i}" for i, m in enumerate(MISTAKES)])
def test_each_mistake_fails_its_check_with_a_teaching_message(cells, cell, edits, pattern, seed):
    with pytest.raises(CheckFailure, match=pattern):
        CHECKS[cell](student(cells, cell, *edits), seed=seed)
