"""coursekit.grading.normalization: the solution passes, the released stub fails, and every
classic mistake loses its check with a message that names it."""
import re

import pytest
import torch.nn.functional as F

from coursekit.grading import CheckFailure
from coursekit.grading import normalization as checks
from conftest import ROOT, notebook_cells, solution_cells, student_classes, with_mistake

CELLS = ("layer_norm", "instance_norm", "group_norm")
CHECKS = {"layer_norm": checks.check_layer_norm, "instance_norm": checks.check_instance_norm,
          "group_norm": checks.check_group_norm}


@pytest.fixture(scope="module")
def cells():
    return solution_cells("normalization")


@pytest.mark.parametrize("seed", range(5))
def test_solution_passes_every_check(cells, seed):
    ns = student_classes(*(cells[c] for c in CELLS))
    for name, fn in CHECKS.items():
        assert fn(ns[name], seed=seed, points=2) == 2.0
    assert checks.check_group_norm(ns["group_norm"], seed=seed, cases=[((1, 12, 2), 3), ((2, 32, 7), 32)], eps=0.05) == 1.0
    assert checks.check_layer_norm(ns["layer_norm"], seed=seed, cases=[((4, 2, 3, 2, 5), 4)], eps=0.1) == 1.0


def test_released_stub_scores_nothing():
    released = notebook_cells(ROOT / "exercises" / "normalization" / "normalization.ipynb")
    ns = student_classes(*(released[c] for c in CELLS))
    for name, fn in CHECKS.items():
        with pytest.raises(CheckFailure, match="raised NotImplementedError"):
            fn(ns[name])


@pytest.mark.parametrize("name, ready_made", [("layer_norm", F.layer_norm), ("instance_norm", F.instance_norm),
                                              ("group_norm", F.group_norm)])
def test_ready_made_functions_do_not_count(name, ready_made):
    with pytest.raises(CheckFailure, match="must be your own function"):
        CHECKS[name](ready_made)

    def wrapper(input, *args, **kwargs):
        return ready_made(input, *args, **kwargs)
    with pytest.raises(CheckFailure, match="calls a ready-made normalization"):
        CHECKS[name](wrapper)


MISTAKES = [
    # (cell, edits, message pattern)
    ("layer_norm", [("dims = list(range(input.dim() - len(normalized_shape), input.dim()))", "dims = [-1]")],
     r"only the last dimension is normalized, but normalized_shape has 2 dimensions"),
    ("layer_norm", [("var = input.var(dim=dims, correction=0, keepdim=True)", "var = input.var(dim=dims, keepdim=True)")],
     r"unbiased one"),
    ("layer_norm", [("torch.sqrt(var + eps)", "(torch.sqrt(var) + eps)")], r"eps is added outside the square root"),
    ("layer_norm", [("    if isinstance(normalized_shape, int):\n        normalized_shape = (normalized_shape,)\n", "")],
     r"(?s)normalized_shape=5, weight, bias\) raised TypeError.*Likely cause: normalized_shape may be an int"),
    ("instance_norm", [("dims = list(range(2, input.dim()))", "dims = [0] + list(range(2, input.dim()))")],
     r"include the batch dimension N \(that is batch norm\)"),
    ("instance_norm", [("dims = list(range(2, input.dim()))", "dims = list(range(1, input.dim()))")],
     r"include the channels \(that is layer norm\)"),
    ("instance_norm", [("out * weight.view(shape)", "out * weight"), ("out + bias.view(shape)", "out + bias")],
     r"applied along the last dimension; they are per channel"),
    ("group_norm", [("x = input.reshape(N, num_groups, -1)", "x = input.reshape(N, C // num_groups, num_groups, -1).transpose(1, 2).reshape(N, num_groups, -1)"),
                    ("out = ((x - mean) / torch.sqrt(var + eps)).view(input.shape)",
                     "out = ((x - mean) / torch.sqrt(var + eps)).reshape(N, num_groups, C // num_groups, -1).transpose(1, 2).reshape(input.shape)")],
     r"channels are grouped in the wrong order"),
    ("group_norm", [("var = x.var(dim=2, correction=0, keepdim=True)", "var = x.var(dim=2, keepdim=True)")],
     r"unbiased one"),
    ("group_norm", [("torch.sqrt(var + eps)", "(torch.sqrt(var) + eps)")], r"eps is added outside the square root"),
    ("group_norm", [("out * weight.view(shape)", "out * weight"), ("out + bias.view(shape)", "out + bias")],
     r"weight and bias are applied along the last dimension; they are per channel"),
    ("group_norm", [("if C % num_groups != 0:\n        raise ValueError", "if False:\n        raise ValueError"),
                    ("x = input.reshape(N, num_groups, -1)", "x = input[:, :C - C % num_groups].reshape(N, num_groups, -1)"),
                    (".view(input.shape)", ".reshape(N, -1, *input.shape[2:])")],
     r"num_groups=4\) returned a Tensor instead of raising ValueError"),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cell, edits, pattern", MISTAKES, ids=[f"{m[0]}-{i}" for i, m in enumerate(MISTAKES)])
def test_each_mistake_fails_its_check_with_a_teaching_message(cells, cell, edits, pattern, seed):
    wrong = with_mistake(cells, cell, *edits)[cell]
    with pytest.raises(CheckFailure, match=pattern):
        CHECKS[cell](wrong, seed=seed)


ONE_PASS = {"layer_norm": ("var = input.var(dim=dims, correction=0, keepdim=True)",
                          "var = (input * input).mean(dim=dims, keepdim=True) - mean * mean"),
            "instance_norm": ("var = input.var(dim=dims, correction=0, keepdim=True)",
                              "var = (input * input).mean(dim=dims, keepdim=True) - mean * mean"),
            "group_norm": ("var = x.var(dim=2, correction=0, keepdim=True)",
                           "var = (x * x).mean(dim=2, keepdim=True) - mean * mean")}


# the arguments of the notebook's check cells, visible and hidden
GRADED = [("layer_norm", {}), ("layer_norm", dict(seed=4242, cases=[((1, 7), 1), ((4, 2, 3, 2, 5), 4), ((8, 16, 32), 1)], eps=0.1)),
          ("instance_norm", {}), ("instance_norm", dict(seed=777, shapes=[(1, 2, 2), (2, 5, 3, 3, 2)])),
          ("group_norm", {}), ("group_norm", dict(seed=777, cases=[((1, 12, 2), 3), ((3, 16, 2, 3), 8), ((2, 32, 7), 32)], eps=0.05))]


@pytest.mark.parametrize("seed", [None, 1, 2])
@pytest.mark.parametrize("cell, kwargs", GRADED, ids=[f"{c}-{'visible' if not k else 'hidden'}" for c, k in GRADED])
def test_a_one_pass_variance_scores_every_graded_call(cells, cell, kwargs, seed):
    """mean(x**2) - mean(x)**2 is right on paper; in float32 it loses digits when a mean is
    large compared with its spread, and the checks judge float32 by the precision float32
    allows for each group of values (as batch norm's do): it passes every graded call, visible
    and hidden, on the notebook's seeds and on others."""
    wrong = with_mistake(cells, cell, ONE_PASS[cell])[cell]
    kwargs = kwargs if seed is None else {**kwargs, "seed": seed}
    assert CHECKS[cell](wrong, **kwargs, points=2) == 2.0


# the variance rounded to bfloat16 for float32 inputs only: digits lost, no formula mistake
LOSSY = {cell: (new, new + "\n    if input.dtype == torch.float32:\n        var = var.bfloat16().float()")
         for cell, (old, new) in ONE_PASS.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_digits_lost_in_float32_only_get_the_precision_hint_never_a_formula_hint(cells, cell, seed):
    """The same values passed in float64, so a float32 failure is not blamed on a formula
    (in float32 with eps=1e-5 lost digits can look like eps outside the square root)."""
    wrong = with_mistake(cells, cell, ONE_PASS[cell], LOSSY[cell])[cell]
    with pytest.raises(CheckFailure) as failure:
        CHECKS[cell](wrong, seed=seed)
    message = str(failure.value)
    assert "torch.float32" in message.splitlines()[0], message
    hints = re.findall(r"Likely mistake: .*", message)
    assert len(hints) == 1 and "lost more digits than torch.float32 allows" in hints[0], message
