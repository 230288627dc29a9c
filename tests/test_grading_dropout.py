"""coursekit.grading.dropout: the solution passes on every seed, the released stub fails,
ready-made dropout does not count, and each classic mistake loses its check with a
message that names it."""
import pytest
import torch.nn.functional as F

from coursekit import regularization
from coursekit.grading import CheckFailure
from coursekit.grading import dropout as checks
from conftest import ROOT, notebook_cells, solution_cells, with_mistake

CHECKS = [checks.check_dropout_forward, checks.check_dropout_eval, checks.check_dropout_backward,
          checks.check_dropout_edge_cases]


@pytest.fixture(scope="module")
def cells():
    return solution_cells("dropout")


def student_dropout(cells, *edits):
    return with_mistake(cells, "dropout", *edits, setup=("imports",))["dropout"]


@pytest.mark.parametrize("seed", range(5))
def test_solution_passes_every_check(cells, seed):
    dropout = student_dropout(cells)
    for check in CHECKS:
        assert check(dropout, seed=seed, points=3) == 3.0


def test_released_stub_scores_nothing():
    dropout = student_dropout(notebook_cells(ROOT / "exercises" / "dropout" / "dropout.ipynb"))
    for check in CHECKS:
        with pytest.raises(CheckFailure, match="NotImplementedError"):
            check(dropout)


@pytest.mark.parametrize("owner", [F, regularization])
def test_ready_made_dropout_does_not_count(owner):
    with pytest.raises(CheckFailure, match="must be your own function"):
        checks.check_dropout_forward(owner.dropout)

    def wrapper(input, p=0.5, training=True, generator=None):
        return owner.dropout(input, p, training)   # looked up when called, as in a student's cell
    with pytest.raises(CheckFailure, match="calls a ready-made dropout"):
        checks.check_dropout_forward(wrapper)


KEEP = "keep = torch.rand(input.shape, generator=generator, device=input.device, dtype=input.dtype) >= p"
RETURN = "return input * keep / (1 - p)"
MISTAKES = [
    # (check, edits, message pattern)
    (checks.check_dropout_forward, [(RETURN, "return input * keep")], r"kept values are not rescaled"),
    (checks.check_dropout_forward, [(RETURN, "return input * keep * (1 - p)")], r"multiplied by 1 - p; inverted dropout \*divides\*"),
    (checks.check_dropout_forward, [(">= p", "< p"), ("/ (1 - p)", "/ p")], r"p is used as the probability of keeping"),
    (checks.check_dropout_forward, [(">= p", "< p")], r"p is used as the probability of keeping"),
    (checks.check_dropout_forward, [(", dtype=input.dtype) >= p", ") >= p"), (RETURN, "return (input * keep / (1 - p)).float()")],
     r"dtype torch.float32.*input's shape"),
    (checks.check_dropout_eval, [("if not training or p == 0:", "if p == 0:")], r"evaluation mode \(training=False\) dropout is the identity"),
    (checks.check_dropout_eval, [("if not training or p == 0:\n        return input", "if False:\n        return input")],
     r"dropout\(x, p=0.5, training=False\) changed"),
    (checks.check_dropout_backward, [(RETURN, "return NewMaskInBackward.apply(input, keep, p)")],
     r"dropped in the forward pass receive a gradient.*same mask"),
    (checks.check_dropout_backward, [(RETURN, "return input.detach() * keep / (1 - p)")], r"does not require grad"),
    (checks.check_dropout_edge_cases, [("if p == 1:\n        return input * 0", "if False:\n        pass")],
     r"returned NaN: 1 / \(1 - p\) divides by zero"),
    (checks.check_dropout_edge_cases, [("if not 0 <= p <= 1:\n        raise", "if False:\n        raise")],
     r"p=-0.1\) returned a Tensor instead of raising ValueError"),
    (checks.check_dropout_edge_cases, [('raise ValueError(f"dropout probability p must be in [0, 1], got {p}")',
                                        'raise ValueError("bad p")')], r"a clear message names the bad value \(-0.1\)"),
    (checks.check_dropout_edge_cases, [("device=input.device, ", "")], r"on the input's device"),
    (checks.check_dropout_edge_cases, [("generator=generator, ", "")], r"generators seeded alike must give the same mask"),
]

NEW_MASK = '''
class NewMaskInBackward(torch.autograd.Function):
    """A wrong dropout: the backward pass draws a fresh mask."""
    @staticmethod
    def forward(ctx, input, keep, p):
        ctx.p = p
        return input * keep / (1 - p)

    @staticmethod
    def backward(ctx, grad):
        keep = torch.rand(grad.shape, dtype=grad.dtype) >= ctx.p
        return grad * keep / (1 - ctx.p), None, None
'''


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("check, edits, pattern", MISTAKES, ids=[f"{m[0].__name__}-{i}" for i, m in enumerate(MISTAKES)])
def test_each_mistake_fails_its_check_with_a_teaching_message(cells, check, edits, pattern, seed):
    dropout = with_mistake({**cells, "new_mask": NEW_MASK}, "dropout", *edits, setup=("imports", "new_mask"))["dropout"]
    with pytest.raises(CheckFailure, match=pattern):
        check(dropout, seed=seed)
