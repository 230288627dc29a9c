"""coursekit.grading.initialization: the solution passes on every seed, the released stub
fails, and each classic mistake loses its check with a message that names it."""
import pytest
import torch
from torch import nn

from coursekit import init as reference
from coursekit.grading import CheckFailure
from coursekit.grading import initialization as checks
from conftest import ROOT, notebook_cells, solution_cells, student_classes

CELLS = ("fans", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "layer_stds")
CHECKS = {"fans": (checks.check_fans, "calculate_fan_in_and_fan_out"),
          "xavier_uniform_": (checks.check_xavier_uniform, "xavier_uniform_"),
          "xavier_normal_": (checks.check_xavier_normal, "xavier_normal_"),
          "kaiming_uniform_": (checks.check_kaiming_uniform, "kaiming_uniform_"),
          "kaiming_normal_": (checks.check_kaiming_normal, "kaiming_normal_"),
          "layer_stds": (checks.check_layer_stds, "layer_stds")}


@pytest.fixture(scope="module")
def cells():
    return solution_cells("initialization")


def namespace(cells, edits=(), cell=None):
    """The student's namespace after running the imports and every solution cell, with text
    replaced in ``cell``."""
    sources = dict(cells)
    for old, new in edits:
        assert old in sources[cell], f"the solution cell {cell!r} no longer contains {old!r}: update this test"
        sources[cell] = sources[cell].replace(old, new)
    return student_classes(sources["imports"], *(sources[c] for c in CELLS))


def run_check(ns, cell, **kwargs):
    check, name = CHECKS[cell]
    return check(ns[name], **kwargs)


@pytest.mark.parametrize("seed", range(4))
def test_solution_passes_every_check(cells, seed):
    ns = namespace(cells)
    for cell in CELLS:
        kwargs = {} if cell == "fans" else {"seed": seed}
        assert run_check(ns, cell, points=2, **kwargs) == 2.0


def test_released_stub_scores_nothing():
    released = notebook_cells(ROOT / "exercises" / "initialization" / "initialization.ipynb")
    ns = namespace(released)
    for cell in CELLS:
        with pytest.raises(CheckFailure, match="raised NotImplementedError"):
            run_check(ns, cell)


@pytest.mark.parametrize("cell", CELLS[1:5])
def test_ready_made_initializers_do_not_count(cell):
    check, name = CHECKS[cell]
    with pytest.raises(CheckFailure, match="must be your own function"):
        check(getattr(nn.init, name))

    def wrapper(tensor, *args, **kwargs):
        return getattr(torch.nn.init, name)(tensor, *args, **kwargs)
    with pytest.raises(CheckFailure, match="calls a ready-made initializer"):
        check(wrapper)

    def via_coursekit(tensor, *args, **kwargs):
        return getattr(reference, name)(tensor, *args, **kwargs)
    with pytest.raises(CheckFailure, match="calls a ready-made initializer"):
        check(via_coursekit)


SAMPLE_U = "return tensor.uniform_(-bound, bound, generator=generator)"
SAMPLE_N = "return tensor.normal_(0.0, std, generator=generator)"
MISTAKES = [
    # (cell, edits, message pattern)
    ("fans", [("receptive_field *= size", "pass")], r"multiply both fans by the receptive field"),
    ("fans", [("return fan_in, fan_out", "return fan_out, fan_in")], r"fan_in and fan_out are swapped"),
    ("fans", [("if tensor.dim() < 2:", "if False:")], r"shape \(5,\)\) raised IndexError.*should raise ValueError"),
    ("fans", [("return fan_in, fan_out", "return [fan_in, fan_out]")], r"should return a tuple"),
    ("xavier_uniform_", [("2.0 / (fan_in + fan_out)", "1.0 / fan_in")], r"uses fan_in only"),
    ("xavier_uniform_", [("bound = math.sqrt(3.0) * std", "bound = std")], r"standard deviation was used as the bound"),
    ("xavier_uniform_", [("std = gain * math.sqrt", "std = math.sqrt")], r"the gain is ignored"),
    ("xavier_uniform_", [(SAMPLE_U, "tensor.uniform_(-bound, bound, generator=generator)")], r"returned None"),
    ("xavier_uniform_", [("with torch.no_grad():\n        " + SAMPLE_U,
                          "return tensor.new_empty(tensor.shape).uniform_(-bound, bound, generator=generator)")],
     r"returned a new tensor instead of filling the given one in place \(the tensor passed in was left unchanged\)"),
    ("xavier_uniform_", [("with torch.no_grad():\n        " + SAMPLE_U, SAMPLE_U)],
     r"a leaf Variable that requires grad.*\nLikely cause: .*torch.no_grad\(\)"),
    ("xavier_uniform_", [(SAMPLE_U, "return tensor.uniform_(-bound, bound)")], r"generators seeded alike gave different values"),
    ("xavier_normal_", [(SAMPLE_N, "return tensor.uniform_(-std * math.sqrt(3), std * math.sqrt(3), generator=generator)")],
     r"beyond 2 standard deviations.*normal_"),
    ("xavier_normal_", [("2.0 / (fan_in + fan_out)", "1.0 / fan_in")], r"uses fan_in only"),
    ("kaiming_uniform_", [("std = calculate_gain(nonlinearity, a) / math.sqrt(fan)", "std = 1 / math.sqrt(fan)")],
     r"the gain is missing \(the factor 2"),
    ("kaiming_uniform_", [("bound = math.sqrt(3.0) * std", "bound = std")], r"standard deviation was used as the bound"),
    ("kaiming_uniform_", [('fan = fan_in if mode == "fan_in" else fan_out', 'fan = fan_out if mode == "fan_in" else fan_in')],
     r"uses the other fan"),
    ("kaiming_uniform_", [("calculate_gain(nonlinearity, a)", "math.sqrt(2.0)")], r"gain of a ReLU was used for every nonlinearity"),
    ("kaiming_uniform_", [('if mode not in ("fan_in", "fan_out"):\n        raise', 'if False:\n        raise')],
     r"mode='fan_avg'\) returned a Tensor instead of raising ValueError"),
    ("kaiming_normal_", [("std = calculate_gain(nonlinearity, a) / math.sqrt(fan)", "std = 1 / math.sqrt(fan)")],
     r"the gain is missing"),
    ("kaiming_normal_", [("with torch.no_grad():\n        " + SAMPLE_N, "return tensor.data.normal_(0.0, std, generator=generator)")],
     r"filled the tensor but returned another tensor object \(such as tensor.data"),
    ("kaiming_normal_", [("with torch.no_grad():\n        " + SAMPLE_N,
                          "tensor.data.normal_(0.0, std, generator=generator)\n    return tensor")], None),
    ("layer_stds", [("h.std(correction=0)", "h.std()")], r"the std is the unbiased one"),
    ("layer_stds", [("h.std(correction=0)", "h.std(dim=0, correction=0).mean()")], r"computed per unit over the batch"),
    ("layer_stds", [("if isinstance(layer, ACTIVATIONS):", "if isinstance(layer, nn.Linear):")],
     r"measured the Linear layers"),
    ("layer_stds", [("return torch.stack(stds)", "return [s.item() for s in stds]")], r"1-D torch.Tensor.*got a list"),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cell, edits, pattern", MISTAKES, ids=[f"{m[0]}-{i}" for i, m in enumerate(MISTAKES)])
def test_each_mistake_fails_its_check_with_a_teaching_message(cells, cell, edits, pattern, seed):
    ns = namespace(cells, edits, cell)
    kwargs = {} if cell == "fans" else {"seed": seed}
    if pattern is None:   # an equivalent way of writing it: still correct
        assert run_check(ns, cell, **kwargs) == 1.0
        return
    with pytest.raises(CheckFailure, match=pattern):
        run_check(ns, cell, **kwargs)


def test_a_layer_stds_that_changes_the_model_fails(cells):
    source = cells["layer_stds"].replace("with torch.no_grad():", "with torch.no_grad():\n        model[0].weight.mul_(2)")
    ns = student_classes(cells["imports"], source)
    with pytest.raises(CheckFailure, match="changed the model's weights"):
        checks.check_layer_stds(ns["layer_stds"])
