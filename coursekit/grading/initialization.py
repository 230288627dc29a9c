"""Checks for the ``initialization`` assignment: the student's fans, Xavier and He
initializers, and their per-layer activation-std measurement.

Random initializers are judged by their statistics, not by matching numbers, so that any
correct way of sampling passes: on large tensors the sample mean and variance must lie
within 6 standard errors of the reference distribution's, a uniform sample must fill
:math:`[-b, b]` and no more, a normal one must have a normal's tails. A wrong variance is
matched against the variances that the classic mistakes produce, to name the mistake::

    check_fans(calculate_fan_in_and_fan_out, points=3)
    check_kaiming_uniform(kaiming_uniform_, points=4)
    check_layer_stds(layer_stds, points=3)
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from coursekit import init as _reference
from coursekit import measure as _measure
from coursekit.grading import CheckFailure, call, check_own_work, expect_value_error, preview

__all__ = ["check_fans", "check_xavier_uniform", "check_xavier_normal", "check_kaiming_uniform",
           "check_kaiming_normal", "check_layer_stds", "ACTIVATIONS"]

# The references, taken before any ready-made function is forbidden inside a check.
_ref_fans, _ref_gain = _reference.calculate_fan_in_and_fan_out, _reference.calculate_gain
_ref_stds = _measure.activation_stds
_READY_MADE = [(nn.init, name) for name in ("xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
                                            "kaiming_normal_", "_calculate_fan_in_and_fan_out",
                                            "_calculate_correct_fan", "trunc_normal_", "orthogonal_")]
_READY_MADE += [(_reference, name) for name in _reference.__all__]


# What a solution may not call, by any route: the trusted grader's worker watches for torch's
# functions, builtins and operators of these names (coursekit.classroom.worker).
FORBIDDEN = ("xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
             "_calculate_fan_in_and_fan_out", "_calculate_correct_fan", "_no_grad_uniform_",
             "_no_grad_normal_", "trunc_normal_", "orthogonal_")
FORBIDDEN_WHAT = "initializer (torch.nn.init)"

def _checks(name: str, what: str = "initializer (torch.nn.init or coursekit.init)"):
    return check_own_work(name, _READY_MADE, what=what)


# --------------------------------------------------------------------------- fans

FAN_SHAPES = ((30, 20), (20, 30), (16, 3, 5), (8, 4, 3, 3), (6, 2, 3, 3, 3), (1, 1), (12, 1, 7))


@_checks("calculate_fan_in_and_fan_out")
def check_fans(calculate_fan_in_and_fan_out, *, shapes: Sequence[tuple[int, ...]] = FAN_SHAPES) -> None:
    """Fans of linear and convolution weights (``(out, in, *kernel)``), and a ``ValueError``
    for a tensor with fewer than 2 dimensions."""
    for shape in shapes:
        what = f"calculate_fan_in_and_fan_out(tensor of shape {tuple(shape)})"
        got = call(calculate_fan_in_and_fan_out, torch.empty(shape), what=what)
        expected = _ref_fans(torch.empty(shape))
        if not (isinstance(got, tuple) and len(got) == 2):
            raise CheckFailure(f"{what} should return a tuple (fan_in, fan_out), got {got!r}.")
        try:
            got = tuple(int(v) for v in got)
        except (TypeError, ValueError):
            raise CheckFailure(f"{what} should return two integers, got {got!r}.") from None
        if got == expected:
            continue
        out, inp, field = shape[0], shape[1], math.prod(shape[2:])
        hints = {(inp, out): "a convolution weight (out, in, *kernel) connects each output to "
                             "in * kernel_size inputs: multiply both fans by the receptive field "
                             "size (the product of the kernel dimensions).",
                 (out * field, inp * field): "fan_in and fan_out are swapped: a weight has shape "
                                             "(out, in, ...), so fan_in comes from dimension 1."}
        hint = hints.get(got)
        raise CheckFailure(f"{what} returned {got}, expected {expected}."
                           + (f"\nLikely mistake: {hint}" if hint else ""))
    for shape in ((5,), ()):
        expect_value_error(calculate_fan_in_and_fan_out, torch.empty(shape),
                           what=f"calculate_fan_in_and_fan_out(tensor of shape {tuple(shape)})",
                           why="a tensor with fewer than 2 dimensions (a bias) has no fan_in and fan_out.")


# --------------------------------------------------------------------------- initializers

# Shapes with fan_in != fan_out (so that fan mistakes show), linear and convolutional,
# each with at least 150 000 elements (so that 6 standard errors are about 2 % of the variance).
INIT_SHAPES = ((300, 700), (700, 300), (96, 32, 7, 7), (256, 48, 13))


def _sample_stats(w: torch.Tensor) -> dict:
    w = w.detach().double().flatten()
    var = w.var(correction=0).item()
    return {"n": w.numel(), "mean": w.mean().item(), "var": var, "max": w.abs().max().item(),
            "tails": (w.abs() > 2 * math.sqrt(var)).double().mean().item()}


def _call_init(fn: Callable, shape, what: str, dtype=torch.float32, **kwargs) -> torch.Tensor:
    """Call the student's initializer on a fresh parameter-like leaf that requires grad,
    and check the contract: in place, the same tensor returned, nothing recorded for autograd."""
    tensor = torch.full(shape, float("nan"), dtype=dtype).requires_grad_()
    got = call(fn, tensor, **kwargs, what=what,
               hint="filling a tensor that requires grad in place must happen under "
                    "torch.no_grad() (as torch.nn.init does): the initialization is not part "
                    "of the model's computation.")
    if got is None:
        raise CheckFailure(f"{what} returned None: an initializer fills the tensor in place *and* "
                           f"returns it (return tensor), so that w = init(w) works too.")
    if got is not tensor:
        if isinstance(got, torch.Tensor) and got.data_ptr() == tensor.data_ptr():
            raise CheckFailure(f"{what} filled the tensor but returned another tensor object (such "
                               f"as tensor.data, which does not require grad): return the tensor that "
                               f"was passed in, so that w = init(w) keeps a parameter a parameter.")
        filled = not torch.isnan(tensor.detach()).any()
        raise CheckFailure(f"{what} returned a new tensor instead of filling the given one in place"
                           + ("" if filled else " (the tensor passed in was left unchanged)")
                           + ": use the in-place methods tensor.uniform_(...) / tensor.normal_(...) "
                             "under torch.no_grad(), and return the same tensor.")
    if tensor.grad_fn is not None or not tensor.requires_grad:
        raise CheckFailure(f"{what} recorded the initialization for autograd (grad_fn "
                           f"{type(tensor.grad_fn).__name__}) or turned requires_grad off: fill "
                           f"the tensor under torch.no_grad().")
    if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
        raise CheckFailure(f"{what} changed the tensor's shape or dtype.")
    if torch.isnan(tensor.detach()).any():
        raise CheckFailure(f"{what} left some elements unfilled (or filled them with NaN).")
    return tensor


def _judge(stats: dict, std: float, uniform: bool, what: str, mistakes: dict[str, float]) -> None:
    """Compare sample statistics with the distribution of standard deviation ``std``."""
    n, var = stats["n"], std ** 2
    mu4 = (9 / 5 if uniform else 3) * var ** 2
    se_var = math.sqrt((mu4 - var ** 2) / n)
    if abs(stats["mean"]) > 6 * std / math.sqrt(n):
        raise CheckFailure(f"{what}: the values have mean {stats['mean']:.3g}, but the distribution "
                           f"should be centred on 0 (e.g. U[-b, b], not U[0, b]).")
    if abs(stats["var"] - var) > 6 * se_var:
        lines = [f"{what}: the values have standard deviation {math.sqrt(stats['var']):.4g}, "
                 f"expected {std:.4g} (variance {var:.4g})."]
        for explanation, wrong_std in mistakes.items():
            if abs(stats["var"] - wrong_std ** 2) <= 6 * se_var * max(1.0, wrong_std ** 2 / var):
                lines.append(f"Likely mistake: {explanation}")
                break
        raise CheckFailure("\n".join(lines))
    if uniform:
        bound = math.sqrt(3) * std
        if stats["max"] > bound * (1 + 1e-5) or stats["max"] < 0.995 * bound:
            raise CheckFailure(f"{what}: the largest |value| is {stats['max']:.4g}, but a uniform "
                               f"U[-b, b] with standard deviation {std:.4g} has b = sqrt(3) * std = "
                               f"{bound:.4g}: sample with tensor.uniform_(-b, b).")
    elif stats["tails"] < 0.035:
        raise CheckFailure(f"{what}: only {100 * stats['tails']:.2f} % of the values lie beyond 2 "
                           f"standard deviations, where a normal distribution has 4.6 %: sample "
                           f"with tensor.normal_(0, std), not a uniform distribution.")


def _check_generator(fn: Callable, what: str, **kwargs) -> None:
    first = _call_init(fn, (40, 30), what, generator=torch.Generator().manual_seed(11), **kwargs)
    again = _call_init(fn, (40, 30), what, generator=torch.Generator().manual_seed(11), **kwargs)
    if not torch.equal(first, again):
        raise CheckFailure(f"{what}: two calls with generators seeded alike gave different values; "
                           f"pass generator=generator to uniform_/normal_ so that a seed makes the "
                           f"initialization reproducible.")


def _xavier_std(shape, gain):
    fan_in, fan_out = _ref_fans(torch.empty(shape))
    return gain * math.sqrt(2 / (fan_in + fan_out)), fan_in, fan_out


def _check_xavier(fn: Callable, name: str, uniform: bool, seed: int, shapes, gains) -> None:
    gen = torch.Generator().manual_seed(seed)
    for shape in shapes:
        for gain in gains:
            options = "" if gain == 1 else f", gain={gain:.4g}"
            what = f"{name}(tensor of shape {tuple(shape)}{options})"
            kwargs = {} if gain == 1 else {"gain": gain}
            w = _call_init(fn, shape, what, generator=gen, **kwargs)
            std, fan_in, fan_out = _xavier_std(shape, gain)
            receptive = math.prod(shape[2:])
            mistakes = {
                "the variance uses fan_in only (that is LeCun / He without the factor 2); "
                "Xavier's compromise is 2 / (fan_in + fan_out).": gain / math.sqrt(fan_in),
                "the variance uses fan_out only; Xavier's compromise is 2 / (fan_in + fan_out).":
                    gain / math.sqrt(fan_out),
                "the standard deviation was used as the bound of the uniform distribution: "
                "U[-b, b] has standard deviation b / sqrt(3), so b = sqrt(3) * std.": std / math.sqrt(3),
                "the gain is ignored.": std / gain,
                "the fans ignore the receptive field of the convolution kernel.":
                    gain * math.sqrt(2 / (shape[0] + shape[1])),
                "sqrt is missing: the standard deviation is the square root of the variance "
                "2 / (fan_in + fan_out).": gain * 2 / (fan_in + fan_out),
            }
            if receptive == 1:
                del mistakes["the fans ignore the receptive field of the convolution kernel."]
            if not uniform:
                del mistakes["the standard deviation was used as the bound of the uniform distribution: "
                             "U[-b, b] has standard deviation b / sqrt(3), so b = sqrt(3) * std."]
            _judge(_sample_stats(w), std, uniform, what, mistakes)
    _check_generator(fn, f"{name}(tensor, generator=...)")


@_checks("xavier_uniform_")
def check_xavier_uniform(xavier_uniform_, *, seed: int = 0, shapes=INIT_SHAPES[:3],
                         gains: Sequence[float] = (1.0, 5 / 3)) -> None:
    """Xavier/Glorot uniform: U[-b, b], b = gain * sqrt(6 / (fan_in + fan_out)); in place,
    under no_grad, returning the tensor, honouring the generator."""
    _check_xavier(xavier_uniform_, "xavier_uniform_", True, seed, shapes, gains)


@_checks("xavier_normal_")
def check_xavier_normal(xavier_normal_, *, seed: int = 0, shapes=INIT_SHAPES[1:3],
                        gains: Sequence[float] = (1.0, 2.0)) -> None:
    """Xavier/Glorot normal: N(0, gain^2 * 2 / (fan_in + fan_out))."""
    _check_xavier(xavier_normal_, "xavier_normal_", False, seed, shapes, gains)


KAIMING_OPTIONS = ({}, {"nonlinearity": "relu"}, {"mode": "fan_out", "nonlinearity": "relu"},
                   {"a": 0.2}, {"a": math.sqrt(5), "mode": "fan_in"}, {"nonlinearity": "tanh", "mode": "fan_out"},
                   {"nonlinearity": "linear"})


def _check_kaiming(fn: Callable, name: str, uniform: bool, seed: int, shapes, options_list) -> None:
    gen = torch.Generator().manual_seed(seed)
    for shape in shapes:
        for options in options_list:
            text = "".join(f", {k}={v:.4g}" if isinstance(v, float) else f", {k}={v!r}"
                           for k, v in options.items())
            what = f"{name}(tensor of shape {tuple(shape)}{text})"
            w = _call_init(fn, shape, what, generator=gen, **options)
            a, mode = options.get("a", 0), options.get("mode", "fan_in")
            nonlinearity = options.get("nonlinearity", "leaky_relu")
            fan_in, fan_out = _ref_fans(torch.empty(shape))
            fan, other = (fan_in, fan_out) if mode == "fan_in" else (fan_out, fan_in)
            gain = _ref_gain(nonlinearity, a)
            std = gain / math.sqrt(fan)
            mistakes = {
                f"mode={mode!r} uses the other fan: fan_in is the number of inputs of each output "
                f"(dimension 1 times the kernel size), fan_out dimension 0 times the kernel size.":
                    gain / math.sqrt(other),
                "the gain is missing (the factor 2 of He et al. for a ReLU): std = gain / sqrt(fan) "
                "with gain = calculate_gain(nonlinearity, a).": 1 / math.sqrt(fan),
                "the gain of a ReLU was used for every nonlinearity: use calculate_gain(nonlinearity, a).":
                    math.sqrt(2) / math.sqrt(fan),
                "the standard deviation was used as the bound of the uniform distribution: "
                "U[-b, b] has standard deviation b / sqrt(3), so b = sqrt(3) * std.": std / math.sqrt(3),
                "the fans ignore the receptive field of the convolution kernel.":
                    gain / math.sqrt(shape[1] if mode == "fan_in" else shape[0]),
                "the variance is 2 / (fan_in + fan_out): that is Xavier, not He.":
                    gain * math.sqrt(2 / (fan_in + fan_out)),
                "sqrt is missing: the standard deviation is gain / sqrt(fan).": gain / fan,
            }
            if not uniform:
                mistakes = {k: v for k, v in mistakes.items() if "bound" not in k}
            _judge(_sample_stats(w), std, uniform, what, mistakes)
    expect_value_error(fn, torch.empty(4, 3), mode="fan_avg", what=f"{name}(tensor, mode='fan_avg')",
                       names=("fan_avg",), example="mode 'fan_avg' not supported; use one of ('fan_in', 'fan_out')",
                       why="an unknown mode must be an error, not silently treated as 'fan_in' or 'fan_out'.")
    _check_generator(fn, f"{name}(tensor, generator=...)")


@_checks("kaiming_uniform_")
def check_kaiming_uniform(kaiming_uniform_, *, seed: int = 0, shapes=INIT_SHAPES[:3],
                          options: Sequence[dict] = KAIMING_OPTIONS) -> None:
    """He/Kaiming uniform: U[-b, b], b = sqrt(3) * gain / sqrt(fan_mode); both modes,
    several nonlinearities and slopes; ValueError for an unknown mode."""
    _check_kaiming(kaiming_uniform_, "kaiming_uniform_", True, seed, shapes, options)


@_checks("kaiming_normal_")
def check_kaiming_normal(kaiming_normal_, *, seed: int = 0, shapes=INIT_SHAPES[1:3],
                         options: Sequence[dict] = KAIMING_OPTIONS[:4]) -> None:
    """He/Kaiming normal: N(0, gain^2 / fan_mode)."""
    _check_kaiming(kaiming_normal_, "kaiming_normal_", False, seed, shapes, options)


# --------------------------------------------------------------------------- the experiment

ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.GELU, nn.ELU, nn.SELU)


def deep_mlp(depth: int, width: int, activation: type, *, inputs: int = 40, outputs: int = 10) -> nn.Sequential:
    """``depth`` hidden layers ``Linear -> activation`` of ``width`` units, then a linear output."""
    layers, size = [], inputs
    for _ in range(depth):
        layers += [nn.Linear(size, width), activation()]
        size = width
    return nn.Sequential(*layers, nn.Linear(size, outputs))


LAYER_STD_CASES = ((10, 32, nn.Tanh, 64), (12, 48, nn.ReLU, 128), (6, 4, nn.Tanh, 8), (5, 20, nn.Sigmoid, 16))


@check_own_work("layer_stds", [(_measure, "activation_stds")],
                what="statistics helper (coursekit.measure.activation_stds)")
def check_layer_stds(layer_stds, *, seed: int = 0,
                     cases: Sequence[tuple[int, int, type, int]] = LAYER_STD_CASES) -> None:
    """``layer_stds(model, x)``: a 1-D tensor with the population std of the output of each
    activation layer of the model, in order, on one forward pass; the model unchanged."""
    for depth, width, activation, batch in cases:
        torch.manual_seed(seed + depth)
        model = deep_mlp(depth, width, activation)
        x = torch.randn(batch, 40, generator=torch.Generator().manual_seed(seed))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        what = f"layer_stds(a {depth}-layer {activation.__name__} MLP of width {width}, x of shape {tuple(x.shape)})"
        expected = _ref_stds(model, x, layers=ACTIVATIONS)
        got = call(layer_stds, model, x, what=what)
        if type(got) is not torch.Tensor or got.dim() != 1:
            raise CheckFailure(f"{what} should return a 1-D torch.Tensor (one std per activation "
                               f"layer), got {_kind(got)}: e.g. return torch.tensor(stds).")
        if len(got) != len(expected):
            linear = len(expected) + 1
            hint = (" It looks like you measured the Linear layers (there is one more of them, the output "
                    "layer): measure the output of each activation layer." if len(got) == linear else "")
            raise CheckFailure(f"{what} returned {len(got)} values, expected {len(expected)} (one per "
                               f"activation layer).{hint}")
        if any(not torch.equal(v, state[k]) for k, v in model.state_dict().items()):
            raise CheckFailure(f"{what} changed the model's weights; only measure.")
        if any(p.grad is not None for p in model.parameters()):
            raise CheckFailure(f"{what} computed gradients; measure under torch.no_grad().")
        got64 = got.detach().double()
        if torch.allclose(got64, expected, rtol=1e-4, atol=1e-7):
            continue
        unbiased = expected * math.sqrt(batch * width / (batch * width - 1))
        per_unit = _per_unit_std(model, x)
        linear = _ref_stds(model, x, layers=nn.Linear)[:-1]
        lines = [f"{what} returned wrong values.",
                 f"  expected: {preview(expected)}", f"  got:      {preview(got64)}"]
        if torch.allclose(got64, unbiased, rtol=1e-4):
            lines.append("Likely mistake: the std is the unbiased one (divide by n - 1); use the "
                         "population std over all elements, x.std(correction=0).")
        elif torch.allclose(got64, per_unit, rtol=1e-4):
            lines.append("Likely mistake: the std was computed per unit over the batch and then "
                         "averaged; take it over all elements of the layer's output at once.")
        elif torch.allclose(got64, linear, rtol=1e-4):
            lines.append("Likely mistake: these are the std of the Linear layers' outputs (before "
                         "the nonlinearity); measure each activation layer's output.")
        raise CheckFailure("\n".join(lines))


def _per_unit_std(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    out, h = [], x
    with torch.no_grad():
        for m in model:
            h = m(h)
            if isinstance(m, ACTIVATIONS):
                out.append(h.std(dim=0, correction=0).mean().item())
    return torch.tensor(out, dtype=torch.float64)


def _kind(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"

