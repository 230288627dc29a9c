"""coursekit.grading.batchnorm: the solution passes, the released stub fails, and every
classic mistake loses its check with a message that names it."""
import pytest

from coursekit.grading import CheckFailure
from coursekit.grading import batchnorm as checks
from conftest import ROOT, notebook_cells, solution_cells, student_classes, with_mistake

FORWARD = [checks.check_batch_norm_train, checks.check_batch_norm_running_stats, checks.check_batch_norm_eval]


@pytest.fixture(scope="module")
def cells():
    return solution_cells("batchnorm")


@pytest.mark.parametrize("seed", range(5))
def test_solution_passes_every_check(cells, seed):
    ns = student_classes(cells["batch_norm"], cells["batch_norm_backward"])
    for fn in FORWARD:
        assert fn(ns["batch_norm"], seed=seed, points=3) == 3.0
    assert checks.check_batch_norm_backward(ns["batch_norm_backward"], seed=seed, points=5) == 5.0
    assert checks.check_batch_norm_train(ns["batch_norm"], seed=seed, shapes=[(2, 1), (64, 16, 4, 4)],
                                         eps_values=[0.5]) == 1.0


def test_released_stub_scores_nothing(cells):
    released = notebook_cells(ROOT / "exercises" / "batchnorm" / "batchnorm.ipynb")
    ns = student_classes(released["batch_norm"], released["batch_norm_backward"])
    for fn in FORWARD:
        with pytest.raises(CheckFailure, match="raised NotImplementedError: replace"):
            fn(ns["batch_norm"])
    with pytest.raises(CheckFailure, match="raised NotImplementedError"):
        checks.check_batch_norm_backward(ns["batch_norm_backward"])


def test_calling_the_ready_made_function_does_not_count():
    import torch.nn.functional as F

    def wrapper(input, running_mean, running_var, weight=None, bias=None, training=False,
                momentum=0.1, eps=1e-5):
        return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)

    for fn in FORWARD:
        with pytest.raises(CheckFailure, match="calls a ready-made batch normalization"):
            fn(wrapper)
    assert F.batch_norm.__module__ == "torch.nn.functional", "the original is restored"
    with pytest.raises(CheckFailure, match="must be your own function"):
        checks.check_batch_norm_train(F.batch_norm)


MISTAKES = [
    # (cell, edits, check, message pattern)
    ("batch_norm", [("var = input.var(dim=dims, correction=0)", "var = input.var(dim=dims)")],
     checks.check_batch_norm_train, r"normalized with the unbiased variance"),
    ("batch_norm", [("momentum * var * m / (m - 1)", "momentum * var")],
     checks.check_batch_norm_running_stats, r"running_var is updated with the biased variance; PyTorch stores the unbiased one"),
    ("batch_norm", [("running_mean.mul_(1 - momentum).add_(momentum * mean)",
                     "running_mean.mul_(momentum).add_((1 - momentum) * mean)"),
                    ("running_var.mul_(1 - momentum).add_(momentum * var * m / (m - 1))",
                     "running_var.mul_(momentum).add_((1 - momentum) * var * m / (m - 1))")],
     checks.check_batch_norm_running_stats, r"Keras convention"),
    ("batch_norm", [("torch.sqrt(var.view(shape) + eps)", "(torch.sqrt(var.view(shape)) + eps)")],
     checks.check_batch_norm_train, r"eps is added outside the square root"),
    ("batch_norm", [("out = (input - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)",
                     "out = ((input - input.mean(dim=1, keepdim=True))\n"
                     "           / torch.sqrt(input.var(dim=1, correction=0, keepdim=True) + eps))")],
     checks.check_batch_norm_train, r"(?s)shape \(16, 3\).*taken over the channels \(dim 1\)"),
    ("batch_norm", [("out = (input - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)",
                     "out = ((input - input.mean(dim=0, keepdim=True))\n"
                     "           / torch.sqrt(input.var(dim=0, correction=0, keepdim=True) + eps))")],
     checks.check_batch_norm_train, r"(?s)shape \(8, 4, 5\).*over the batch dimension only"),
    ("batch_norm", [("dims = [0] + list(range(2, input.dim()))", "dims = [0]")],
     checks.check_batch_norm_train, r"(?s)shape \(8, 4, 5\).*raised RuntimeError.*reducing over every dimension except 1"),
    ("batch_norm", [("running_mean.mul_(1 - momentum).add_(momentum * mean)",
                     "running_mean = (1 - momentum) * running_mean + momentum * mean"),
                    ("running_var.mul_(1 - momentum).add_(momentum * var * m / (m - 1))",
                     "running_var = (1 - momentum) * running_var + momentum * var * m / (m - 1)")],
     checks.check_batch_norm_running_stats, r"running_mean was not updated.*in place"),
    ("batch_norm", [("    else:\n        mean, var = running_mean, running_var",
                     "    else:\n        mean, var = input.mean(dim=dims), input.var(dim=dims, correction=0)")],
     checks.check_batch_norm_eval, r"normalize with running_mean and running_var, not with the statistics of the batch"),
    ("batch_norm", [("    return out\n", "    if not training:\n"
                     "        running_mean.mul_(0.9).add_(0.1 * input.mean(dim=dims))\n    return out\n")],
     checks.check_batch_norm_eval, r"changed running_mean. In evaluation mode the running statistics are only read"),
    ("batch_norm", [("    if weight is not None:\n        out = out * weight.view(shape)\n"
                     "    if bias is not None:\n        out = out + bias.view(shape)",
                     "    out = out * weight.view(shape) + bias.view(shape)")],
     checks.check_batch_norm_train, r"weight=None, bias=None.*raised AttributeError(?s:.*)Likely cause: weight=None means gamma = 1"),
    ("batch_norm", [("if running_mean is not None:", "if True:"), ("if running_var is not None:", "if True:")],
     checks.check_batch_norm_train, r"(?s)raised AttributeError.*Likely cause: .*running_mean=None"),
    ("batch_norm", [("out = (input - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)",
                     "out = (input - mean.view(shape)) / (torch.sqrt(var.view(shape) + eps) if training\n"
                     "                                    else torch.sqrt(var.view(shape)) + eps)")],
     checks.check_batch_norm_eval, r"(?s)training=False.*in evaluation mode eps is added outside the square root"),
    ("batch_norm", [("out = (input - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)",
                     "out = (input - mean.view(shape)) / (torch.sqrt(var.view(shape) + eps) if training\n"
                     "                                    else var.view(shape) + eps)")],
     checks.check_batch_norm_eval, r"divided by running_var \+ eps, the variance; divide by its square root"),
    ("batch_norm", [("m = input.numel() // input.shape[1]", "m = input.shape[0]")],
     checks.check_batch_norm_running_stats,
     r"(?s)running_var after batch_norm\(x of shape \(8, 4, 5\).*unbiased correction of running_var uses m = N = 8.*8 \* 5 = 40"),
    ("batch_norm", [("m = input.numel() // input.shape[1]", "m = input.numel()")],
     checks.check_batch_norm_running_stats, r"unbiased correction of running_var uses m = input.numel\(\) = 48"),
    ("batch_norm_backward", [("m = input.numel() // input.shape[1]", "m = input.shape[0]")],
     checks.check_batch_norm_backward, r"(?s)shape \(8, 4, 5\).*grad_input uses m = N = 8, the batch size.*8 \* 5 = 40"),
    ("batch_norm_backward", [("dims = [0] + list(range(2, input.dim()))", "dims = [0]"),
                             ("m = input.numel() // input.shape[1]", "m = input.shape[0]")],
     checks.check_batch_norm_backward, r"(?s)shape \(8, 4, 5\).*statistics \(and the sums\) over the batch dimension only"),
    ("batch_norm_backward", [("- g.sum(dim=dims, keepdim=True)\n", "\n")],
     checks.check_batch_norm_backward, r"ignores the path through the mean"),
    ("batch_norm_backward", [("- x_hat * (g * x_hat).sum(dim=dims, keepdim=True))", ")")],
     checks.check_batch_norm_backward, r"ignores the path through the variance"),
    ("batch_norm_backward", [("inv_std / m * (m * g - g.sum(dim=dims, keepdim=True)\n"
                              "                                - x_hat * (g * x_hat).sum(dim=dims, keepdim=True))",
                              "inv_std * g")],
     checks.check_batch_norm_backward, r"ignores that the mean and the variance depend on every input"),
    ("batch_norm_backward", [("return grad_input, None, None", "return grad_input, g.sum(dim=dims), None")],
     checks.check_batch_norm_backward, r"weight=None\) must return \(grad_input, None, None\)"),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cell, edits, check_fn, pattern", MISTAKES,
                         ids=[f"{m[2].__name__}-{i}" for i, m in enumerate(MISTAKES)])
def test_each_mistake_fails_its_check_with_a_teaching_message(cells, cell, edits, check_fn, pattern, seed):
    wrong = with_mistake(cells, cell, *edits)[cell]
    with pytest.raises(CheckFailure, match=pattern):
        check_fn(wrong, seed=seed)
