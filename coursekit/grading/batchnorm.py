"""Checks for the ``batchnorm`` assignment: the student's ``batch_norm`` and ``batch_norm_backward``.

Each check compares the student's function with :mod:`coursekit.norm` on seeded random
inputs of shapes ``(N, C)``, ``(N, C, L)`` and ``(N, C, H, W)`` whose channels have
different means and spreads, recognises the classic mistakes and returns its points (see
:mod:`coursekit.grading`). Each input is tried in float64 first, then with the same values
in float32; the expected result is the reference computed in float64 and rounded, and a
float32 result is judged by the precision float32 allows for that channel (a channel whose
mean is large compared with its spread loses digits in any float32 variance), so that every
correct way of computing it passes: in float32 or in float64 cast back, two-pass or one-pass
variance, any order of reduction::

    check_batch_norm_train(batch_norm, points=4)
    check_batch_norm_backward(batch_norm_backward, points=5)
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from coursekit import norm as _reference
from coursekit.grading import (EPS_OUTSIDE_SQRT, CheckFailure, assert_tensor, call, check_own_work, exact,
                               normalized, precision_mistakes, precision_scale)

__all__ = ["check_batch_norm_train", "check_batch_norm_running_stats", "check_batch_norm_eval",
           "check_batch_norm_backward"]

DEFAULT_SHAPES = ((16, 3), (8, 4, 5), (4, 3, 5, 6))
DEFAULT_DTYPES = (torch.float32, torch.float64)


# --- data ----------------------------------------------------------------------------------

def _case(shape, gen):
    """An input whose channels differ in mean and spread, parameters, running statistics and
    an output gradient, in float64."""
    C = shape[1]
    channel = (1, C) + (1,) * (len(shape) - 2)
    f64 = dict(generator=gen, dtype=torch.float64)
    x = torch.randn(shape, **f64) * (0.2 + 3 * torch.rand(C, **f64)).view(channel) \
        + (4 * torch.randn(C, **f64)).view(channel)
    weight = 0.5 + torch.rand(C, **f64)
    bias = torch.randn(C, **f64)
    running_mean = torch.randn(C, **f64)
    running_var = 0.5 + torch.rand(C, **f64)
    grad = torch.randn(shape, **f64)
    return x, weight, bias, running_mean, running_var, grad


def _cases(seed, shapes, dtypes, min_values=2):
    """Seeded cases ``(x, weight, bias, running_mean, running_var, grad)``: for each shape the
    same values (rounded to the lowest precision asked for) in each dtype, float64 first, so
    that a formula mistake shows without rounding noise. Training needs ``min_values=2``
    values per channel (a variance)."""
    gen = torch.Generator().manual_seed(seed)
    lowest = max(dtypes, key=lambda d: torch.finfo(d).eps)
    for shape in shapes:
        if len(shape) < 2 or min(shape) < 1 or shape[0] * math.prod(shape[2:]) < min_values:
            raise ValueError(f"shapes must be (N, C, *) with at least {min_values} value(s) "
                             f"per channel, got {shape}")
        case = [t.to(lowest) for t in _case(shape, gen)]
        for dtype in sorted(dtypes, key=lambda d: d != torch.float64):
            yield [t.to(dtype) for t in case]


def _describe(x, **options) -> str:
    extra = "".join(f", {k}={v}" for k, v in options.items())
    return f"batch_norm(x of shape {tuple(x.shape)} {x.dtype}{extra})"


_dims = _reference.reduce_dims   # every dimension but the channels


def _view(t, x):
    """A per-channel vector (C,) shaped to broadcast against x: (1, C, 1, ...)."""
    return t.view(_reference.channel_shape(x))


# --- known mistakes, as the wrong results they produce --------------------------------------

def _forward_mistakes(x, weight, bias, eps):
    dims = _dims(x)
    w = 1 if weight is None else _view(weight, x)
    b = 0 if bias is None else _view(bias, x)
    out = {
        "the batch is normalized with the unbiased variance (divide by m - 1). Batch norm "
        "normalizes with the biased variance (divide by m = number of values per channel); "
        "only running_var stores the unbiased one.":
            normalized(x, dims, eps, correction=1) * w + b,
        EPS_OUTSIDE_SQRT: normalized(x, dims, eps, eps_outside=True) * w + b,
        "eps is missing: divide by sqrt(var + eps).": normalized(x, dims, 0) * w + b,
        "gamma and beta are swapped: y = x_hat * weight + bias.":
            normalized(x, dims, eps) * (0 if bias is None else _view(bias, x))
            + (0 if weight is None else _view(weight, x)),
    }
    if x.dim() > 2:
        out["the statistics are taken over the batch dimension only: for an input (N, C, *) "
            "each channel is normalized over N and every position (*), i.e. over every "
            "dimension except 1."] = normalized(x, [0], eps) * w + b
    out["the statistics are taken over the channels (dim 1). Batch norm normalizes each "
        "channel separately, over the batch (and positions): reduce over every dimension "
        "except 1."] = normalized(x, [1], eps) * w + b
    out["the statistics are taken over the whole tensor: batch norm computes one mean and "
        "one variance per channel (dimension 1)."] = normalized(x, list(range(x.dim())), eps) * w + b
    return out


def _running_mistakes(x, running, batch_stat, unbiased_stat, momentum, which):
    out = {
        f"{which} was not updated. In training mode update it in place "
        f"({which}.mul_(1 - momentum).add_(momentum * batch_value)); assigning a new tensor "
        f"to the argument's name does not change the caller's tensor.": running,
        f"{which} uses the Keras convention, momentum * running + (1 - momentum) * batch. "
        f"PyTorch's is the opposite: (1 - momentum) * running + momentum * batch.":
            momentum * running + (1 - momentum) * unbiased_stat,
        f"{which} was replaced by the batch value instead of being averaged with momentum.":
            unbiased_stat,
    }
    if which == "running_var":
        out["running_var is updated with the biased variance; PyTorch stores the unbiased one "
            "(multiply the batch variance by m / (m - 1), m = values per channel)."] = \
            (1 - momentum) * running + momentum * batch_stat
        N, m = x.shape[0], x.numel() // x.shape[1]
        if x.dim() > 2 and N > 1:
            out[f"the unbiased correction of running_var uses m = N = {N}, the batch size; m is the "
                f"number of values per channel, N times every position (here "
                f"{' * '.join(str(s) for s in (N, *x.shape[2:]))} = {m}): m = input.numel() // C."] = \
                (1 - momentum) * running + momentum * batch_stat * N / (N - 1)
        if x.shape[1] > 1:
            out[f"the unbiased correction of running_var uses m = input.numel() = {x.numel()}; m is "
                f"the number of values per channel, input.numel() // C = {m}."] = \
                (1 - momentum) * running + momentum * batch_stat * x.numel() / (x.numel() - 1)
    return out


def _backward_mistakes(grad, x, weight, eps):
    dims = _dims(x)
    mean = x.mean(dims, keepdim=True)
    inv_std = torch.rsqrt(x.var(dims, correction=0, keepdim=True) + eps)
    x_hat = (x - mean) * inv_std
    g = grad if weight is None else grad * _view(weight, x)
    out = {
        "grad_input ignores that the mean and the variance depend on every input of the "
        "channel: it is not just grad * weight / sqrt(var + eps).": g * inv_std,
        "grad_input ignores the path through the mean: subtract the channel mean of "
        "grad * weight as well.":
            inv_std * (g - x_hat * (g * x_hat).mean(dims, keepdim=True)),
        "grad_input ignores the path through the variance: also subtract "
        "x_hat * mean(grad * weight * x_hat) over the channel.":
            inv_std * (g - g.mean(dims, keepdim=True)),
    }
    if x.dim() > 2:
        N, m = x.shape[0], x.numel() // x.shape[1]
        sums = g.sum(dims, keepdim=True), (g * x_hat).sum(dims, keepdim=True)
        out[f"grad_input uses m = N = {N}, the batch size, but the sums run over every dimension "
            f"except the channels: m is the number of values per channel, N times every position "
            f"(here {' * '.join(str(s) for s in (N, *x.shape[2:]))} = {m}), m = input.numel() // C."] = \
            inv_std / N * (N * g - sums[0] - x_hat * sums[1])
        mean0 = x.mean(0, keepdim=True)
        inv_std0 = torch.rsqrt(x.var(0, correction=0, keepdim=True) + eps)
        x_hat0 = (x - mean0) * inv_std0
        out["grad_input takes the statistics (and the sums) over the batch dimension only: for an "
            "input (N, C, *) each channel's mean and variance run over N and every position, so "
            "reduce over every dimension except 1."] = \
            inv_std0 * (g - g.mean(0, keepdim=True) - x_hat0 * (g * x_hat0).mean(0, keepdim=True))
    return out


# --- the checks -----------------------------------------------------------------------------

# The reference is called through these names, taken before any ready-made function is
# forbidden inside a check.
_ref_forward, _ref_backward = _reference.batch_norm, _reference.batch_norm_backward
_READY_MADE = [(torch.nn.functional, "batch_norm"), (torch, "batch_norm"),
               (torch, "native_batch_norm"), (_reference, "batch_norm"),
               (_reference, "batch_norm_backward")]


# What a solution may not call, by any route: the trusted grader's worker watches for torch's
# functions, builtins and operators of these names (coursekit.classroom.worker).
FORBIDDEN = ("batch_norm", "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
             "_batch_norm_with_update", "_batch_norm_impl_index", "native_batch_norm_backward",
             "cudnn_batch_norm", "instance_norm", "layer_norm", "group_norm", "native_layer_norm",
             "native_group_norm")
FORBIDDEN_WHAT = "batch normalization (torch.nn.functional.batch_norm)"

def _checks(name: str):
    return check_own_work(name, _READY_MADE, what="batch normalization "
                          "(torch.nn.functional.batch_norm or coursekit.norm)")


_SHAPES_HINT = ("running_mean, running_var, weight and bias all have shape (C,): compute the "
                "statistics per channel, reducing over every dimension except 1 (for an input "
                "(N, C, H, W): over N, H and W), and reshape (C,) vectors to (1, C, 1, 1) to "
                "broadcast them against the input.")


@_checks("batch_norm")
def check_batch_norm_train(batch_norm, *, seed: int = 0,
                           shapes: Sequence[tuple[int, ...]] = DEFAULT_SHAPES,
                           dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES,
                           eps_values: Sequence[float] = (1e-5, 0.1)) -> None:
    """Training-mode output: per-channel batch mean and biased variance, eps inside the
    square root, gamma and beta (also ``None``), dtype and shape kept."""
    for x, weight, bias, rm, rv, _ in _cases(seed, shapes, dtypes):
        precision = precision_scale(x, _dims(x))
        for eps in eps_values:
            what = _describe(x, training=True, eps=eps)
            got = call(batch_norm, x.clone(), rm.clone(), rv.clone(), weight, bias,
                       training=True, momentum=0.1, eps=eps, what=what, hint=_SHAPES_HINT)
            expected = exact(_ref_forward, x, rm, rv, weight, bias, training=True, eps=eps)
            assert_tensor(got, expected, what=what, scale=(precision * _view(weight.abs(), x)).clamp_min(1.0),
                          mistakes=precision_mistakes(x, dtypes, _forward_mistakes(x, weight, bias, eps)))
        what = _describe(x, training=True, weight=None, bias=None)
        got = call(batch_norm, x.clone(), None, None, None, None, training=True, what=what,
                   hint="weight=None means gamma = 1 and bias=None means beta = 0 (skip them), "
                        "and running_mean=None / running_var=None mean: do not track statistics.")
        assert_tensor(got, exact(_ref_forward, x, None, None, training=True), what=what, scale=precision,
                      mistakes=precision_mistakes(x, dtypes, _forward_mistakes(x, None, None, 1e-5)))


@_checks("batch_norm")
def check_batch_norm_running_stats(batch_norm, *, seed: int = 0,
                                   shapes: Sequence[tuple[int, ...]] = DEFAULT_SHAPES,
                                   dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES,
                                   momenta: Sequence[float] = (0.1, 0.3)) -> None:
    """In training mode the running statistics are updated in place with PyTorch's momentum
    convention, and ``running_var`` stores the unbiased variance."""
    for x, weight, bias, rm, rv, _ in _cases(seed, shapes, dtypes):
        dims = _dims(x)
        batch_mean, batch_var, unbiased = x.mean(dims), x.var(dims, correction=0), x.var(dims, correction=1)
        for momentum in momenta:
            what = _describe(x, training=True, momentum=momentum)
            got_mean, got_var = rm.clone(), rv.clone()
            call(batch_norm, x.clone(), got_mean, got_var, weight, bias, training=True,
                 momentum=momentum, what=what, hint=_SHAPES_HINT)
            ref_mean, ref_var = rm.to(torch.float64, copy=True), rv.to(torch.float64, copy=True)
            _ref_forward(x.double(), ref_mean, ref_var, weight.double(), bias.double(), training=True,
                         momentum=momentum)
            assert_tensor(got_mean, ref_mean.to(x.dtype), what=f"running_mean after {what}", mistakes=precision_mistakes(
                x, dtypes, _running_mistakes(x, rm, batch_mean, batch_mean, momentum, "running_mean")))
            # the batch variance is computed from squares of size mean**2 + var
            scale = (momentum * unbiased * precision_scale(x, dims, keepdim=False)).clamp_min(1.0)
            assert_tensor(got_var, ref_var.to(x.dtype), what=f"running_var after {what}", scale=scale,
                          mistakes=precision_mistakes(x, dtypes, _running_mistakes(x, rv, batch_var, unbiased,
                                                                        momentum, "running_var")))


def _eval_mistakes(x, weight, bias, rm, rv, eps):
    dims = _dims(x)
    w, b, centred = _view(weight, x), _view(bias, x), x - _view(rm, x)
    batch_stats = normalized(x, dims, eps)
    return {
        "in evaluation mode (training=False) normalize with running_mean and running_var, not "
        "with the statistics of the batch: at inference the output for a sample must not "
        "depend on the rest of the batch.": batch_stats * w + b,
        "in evaluation mode eps is added outside the square root: divide by "
        "sqrt(running_var + eps), not sqrt(running_var) + eps (the same formula as in "
        "training, with the running statistics).": centred / (torch.sqrt(_view(rv, x)) + eps) * w + b,
        "in evaluation mode eps is missing: divide by sqrt(running_var + eps).":
            centred / torch.sqrt(_view(rv, x)) * w + b,
        "in evaluation mode the input is divided by running_var + eps, the variance; divide by "
        "its square root, sqrt(running_var + eps).": centred / (_view(rv, x) + eps) * w + b,
        "gamma and beta are swapped: y = x_hat * weight + bias.":
            centred / torch.sqrt(_view(rv, x) + eps) * b + w,
    }


@_checks("batch_norm")
def check_batch_norm_eval(batch_norm, *, seed: int = 0,
                          shapes: Sequence[tuple[int, ...]] = DEFAULT_SHAPES,
                          dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES,
                          eps_values: Sequence[float] = (1e-5, 0.1)) -> None:
    """Evaluation mode normalizes with the running statistics (eps inside the square root)
    and leaves them unchanged; a batch of one example is fine."""
    for x, weight, bias, rm, rv, _ in _cases(seed, shapes, dtypes, min_values=1):
        for eps in eps_values:
            what = _describe(x, training=False, eps=eps)
            got_mean, got_var = rm.clone(), rv.clone()
            got = call(batch_norm, x.clone(), got_mean, got_var, weight, bias, training=False,
                       eps=eps, what=what, hint=_SHAPES_HINT)
            assert_tensor(got, exact(_ref_forward, x, rm, rv, weight, bias, training=False, eps=eps),
                          what=what, mistakes=precision_mistakes(x, dtypes, _eval_mistakes(x, weight, bias, rm, rv, eps)))
            for got_stat, stat, name in ((got_mean, rm, "running_mean"), (got_var, rv, "running_var")):
                if not torch.equal(got_stat, stat):
                    raise CheckFailure(f"{what} changed {name}. In evaluation mode the running "
                                       f"statistics are only read; update them in training mode only.")


@_checks("batch_norm_backward")
def check_batch_norm_backward(batch_norm_backward, *, seed: int = 0,
                              shapes: Sequence[tuple[int, ...]] = DEFAULT_SHAPES,
                              dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES) -> None:
    """``(grad_input, grad_weight, grad_bias)`` of training-mode batch norm, against autograd's."""
    for x, weight, bias, rm, rv, grad in _cases(seed, shapes, dtypes):
        what = f"batch_norm_backward(grad_output, x of shape {tuple(x.shape)} {x.dtype}, weight)"
        got = call(batch_norm_backward, grad.clone(), x.clone(), weight.clone(), what=what)
        if not (isinstance(got, tuple) and len(got) == 3):
            raise CheckFailure(f"{what} must return a tuple (grad_input, grad_weight, grad_bias), "
                               f"got {type(got).__name__}"
                               + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""))
        expected = exact(_ref_backward, grad, x, weight)
        dims = _dims(x)
        inv_std = torch.rsqrt(x.var(dims, correction=0) + 1e-5)
        x_hat = (x - _view(x.mean(dims), x)) * _view(inv_std, x)
        # rounding errors are relative to the size of the terms each result is made of, and
        # to the digits a float32 variance loses (see _precision)
        precision = precision_scale(x, dims)
        scale = (grad.abs().amax() * weight.abs().amax() * inv_std.amax()).clamp_min(1.0) * precision
        assert_tensor(got[0], expected[0], what=f"grad_input of {what}", scale=scale,
                      mistakes=precision_mistakes(x, dtypes, _backward_mistakes(grad, x, weight, 1e-5)))
        assert_tensor(got[1], expected[1], what=f"grad_weight of {what}",
                      scale=((grad.abs() * x_hat.abs()).sum(dims) * precision.reshape(-1)).clamp_min(1.0),
                      mistakes=precision_mistakes(x, dtypes, {
                          "grad_weight is sum(grad_output * x_hat) over every dimension except the "
                          "channels; it does not include weight itself.": expected[1] * weight}))
        assert_tensor(got[2], expected[2], what=f"grad_bias of {what}",
                      scale=grad.abs().sum(dims).clamp_min(1.0))
        what = f"batch_norm_backward(grad_output, x of shape {tuple(x.shape)} {x.dtype}, weight=None)"
        got = call(batch_norm_backward, grad.clone(), x.clone(), None, what=what,
                   hint="weight=None means gamma = 1.")
        if not (isinstance(got, tuple) and len(got) == 3 and got[1] is None and got[2] is None):
            raise CheckFailure(f"{what} must return (grad_input, None, None): without weight "
                               f"there are no affine parameters to differentiate.")
        assert_tensor(got[0], exact(_ref_backward, grad, x, None)[0], what=f"grad_input of {what}",
                      scale=scale, mistakes=precision_mistakes(x, dtypes, _backward_mistakes(grad, x, None, 1e-5)))
