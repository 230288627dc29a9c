"""Checks for the ``normalization`` assignment: the student's ``layer_norm``, ``instance_norm``
and ``group_norm``.

Each check compares the student's function with :mod:`coursekit.norm` on seeded random
inputs whose examples and channels differ in mean and spread, recognises the classic
mistakes and returns its points (see :mod:`coursekit.grading`). As in
:mod:`coursekit.grading.batchnorm`, each input is tried in float64 first, then with the same
values in float32; the expected result is the reference computed in float64 and rounded, and
a float32 result is judged by the precision float32 allows for each group of values that one
mean and one variance are taken over (an example for layer norm, a channel of an example for
instance norm, a group of an example for group norm: one whose mean is large compared with
its spread loses digits in any float32 variance). So every correct way of computing it
passes (in float32 or in float64 cast back, two-pass or one-pass variance, any order of
reduction), a formula mistake is named in float64, without rounding noise, and a float32
result that fails after the same values passed in float64 is told only that it lost digits::

    check_layer_norm(layer_norm, points=5)
    check_group_norm(group_norm, points=6)
"""
from __future__ import annotations

from typing import Sequence

import torch

from coursekit import norm as _reference
from coursekit.grading import (EPS_OUTSIDE_SQRT, assert_tensor, call, check_own_work, exact, expect_value_error,
                               normalized, precision_mistakes, precision_scale)
# the same judging as batch norm's: the exact reference, float32's precision per group of
# values, and only a precision hint for a float32 failure after a float64 pass

__all__ = ["check_layer_norm", "check_instance_norm", "check_group_norm"]

DEFAULT_DTYPES = (torch.float32, torch.float64)

# The references, taken before any ready-made function is forbidden inside a check.
_ref_layer, _ref_instance, _ref_group = _reference.layer_norm, _reference.instance_norm, _reference.group_norm
_READY_MADE = [(torch.nn.functional, "layer_norm"), (torch.nn.functional, "instance_norm"),
               (torch.nn.functional, "group_norm"), (torch, "layer_norm"), (torch, "instance_norm"),
               (torch, "group_norm"), (torch, "native_layer_norm"), (torch, "native_group_norm"),
               (_reference, "layer_norm"), (_reference, "instance_norm"), (_reference, "group_norm")]


# What a solution may not call, by any route: the trusted grader's worker watches for torch's
# functions, builtins and operators of these names (coursekit.classroom.worker).
FORBIDDEN = ("layer_norm", "group_norm", "instance_norm", "batch_norm", "native_layer_norm", "native_group_norm",
             "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
             "_batch_norm_impl_index", "rms_norm")
FORBIDDEN_WHAT = "normalization (torch.nn.functional)"

def _checks(name: str):
    return check_own_work(name, _READY_MADE, what="normalization (torch.nn.functional or coursekit.norm)")


_AFFINE_HINT = ("weight and bias have shape (C,) for instance_norm and group_norm (one value per "
                "channel, reshaped to (1, C, 1, ...)), and the shape normalized_shape for layer_norm.")

_INT_SHAPE_HINT = ("normalized_shape may be an int, as in torch.nn.functional.layer_norm: n means "
                   "(n,), the last dimension only. Turn it into a tuple first: "
                   "if isinstance(normalized_shape, int): normalized_shape = (normalized_shape,)")


# --- data ----------------------------------------------------------------------------------

def _input(shape, gen):
    """Examples and channels with different means and spreads, in float64."""
    f64 = dict(generator=gen, dtype=torch.float64)
    N, C = shape[:2]
    view = (N, C) + (1,) * (len(shape) - 2)
    return torch.randn(shape, **f64) * (0.3 + 2 * torch.rand(view, **f64)) + 3 * torch.randn(view, **f64)


def _params(shape, gen):
    """weight (gamma) and bias (beta) of ``shape``, in float64."""
    f64 = dict(generator=gen, dtype=torch.float64)
    return 0.5 + torch.rand(shape, **f64), torch.randn(shape, **f64)


def _in_each_dtype(dtypes, *tensors):
    """The same values (rounded to the lowest precision asked for) in each dtype, float64
    first, so that a formula mistake shows without rounding noise."""
    lowest = max(dtypes, key=lambda d: torch.finfo(d).eps)
    rounded = [t.to(lowest) for t in tensors]
    for dtype in sorted(dtypes, key=lambda d: d != torch.float64):
        yield [t.to(dtype) for t in rounded]


def _scale(precision, weight_view):
    """What a result's rounding errors are relative to: float32's precision for the group of
    values (see :func:`coursekit.grading.batchnorm._precision`) times |gamma|."""
    return precision if weight_view is None else (precision * weight_view.abs()).clamp_min(1.0)


def _channel_view(t, x):
    """A per-channel vector (C,) shaped to broadcast against x: (1, C, 1, ...)."""
    return None if t is None else t.view((1, -1) + (1,) * (x.dim() - 2))


# --- the mistakes ---------------------------------------------------------------------------

def _common_mistakes(x, dims, eps, affine):
    return {
        "the variance is the unbiased one (divide by m - 1); normalization layers use the "
        "biased variance (divide by m, correction=0).": affine(normalized(x, dims, eps, correction=1)),
        EPS_OUTSIDE_SQRT: affine(normalized(x, dims, eps, eps_outside=True)),
    }


def _per_channel(weight, bias):
    """The per-channel affine transform of instance and group norm, as a function of y."""
    return lambda y: _reference.affine_per_channel(y, weight, bias)


def _wrong_axis_affine(weight, bias, x):
    """gamma and beta broadcast against the *last* dimension instead of the channels."""
    def affine(y):
        return y * weight + bias if x.shape[-1] == x.shape[1] else y
    return affine


def _layer_mistakes(x, dims, k, eps, weight, bias):
    def affine(y):
        return y if weight is None else y * weight + bias
    mistakes = _common_mistakes(x, dims, eps, affine)
    if k > 1:
        mistakes["only the last dimension is normalized, but normalized_shape has "
                 f"{k} dimensions: reduce over all of the last {k} dimensions."] = \
            affine(normalized(x, [-1], eps))
    return mistakes


def _instance_mistakes(x, dims, eps, weight, bias):
    affine = _per_channel(weight, bias)
    mistakes = _common_mistakes(x, dims, eps, affine)
    mistakes["the statistics include the batch dimension N (that is batch norm): "
             "instance norm normalizes each example separately, over its positions only."] = \
        affine(normalized(x, [0, *dims], eps))
    mistakes["the statistics include the channels (that is layer norm): instance norm "
             "normalizes each channel separately, over the positions only."] = \
        affine(normalized(x, [1, *dims], eps))
    if weight is not None:
        mistakes["weight and bias are applied along the last dimension; they are per "
                 "channel (dimension 1): reshape them to (1, C, 1, ...)."] = \
            _wrong_axis_affine(weight, bias, x)(normalized(x, dims, eps))
    return mistakes


def _group_mistakes(x, G, eps, weight, bias):
    N, C = x.shape[:2]
    affine = _per_channel(weight, bias)
    grouped = x.reshape(N, G, -1)                                       # (N, G, C//G * positions)
    mistakes = {k: affine(v.view(x.shape)) for k, v in _common_mistakes(grouped, [2], eps, lambda y: y).items()}
    interleaved = x.reshape(N, C // G, G, -1)                           # wrong: (N, C//G, G, positions)
    mistakes["the channels are grouped in the wrong order: group g holds the consecutive "
             "channels g*C/G ... (g+1)*C/G - 1, so reshape to (N, G, C // G, ...), not "
             "(N, C // G, G, ...)."] = affine(normalized(interleaved, [1, 3], eps).view(x.shape))
    mistakes["the statistics include the batch dimension N: group norm normalizes each "
             "example separately."] = affine(normalized(grouped, [0, 2], eps).view(x.shape))
    if weight is not None:
        mistakes["weight and bias are applied along the last dimension; they are per "
                 "channel (dimension 1): reshape them to (1, C, 1, ...)."] = \
            _wrong_axis_affine(weight, bias, x)(normalized(grouped, [2], eps).view(x.shape))
    return mistakes


# --- the checks -----------------------------------------------------------------------------

@_checks("layer_norm")
def check_layer_norm(layer_norm, *, seed: int = 0,
                     cases: Sequence[tuple[tuple[int, ...], int]] = (((6, 5), 1), ((3, 4, 5), 1), ((3, 4, 5), 2),
                                                                    ((2, 3, 4, 5), 3), ((2, 3, 4, 5), 2)),
                     dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES, eps: float = 1e-5) -> None:
    """Normalization over the trailing ``normalized_shape`` (all of its dimensions), with
    elementwise ``weight``/``bias`` of that shape, also ``None``; ``normalized_shape`` given
    as a tuple, and as an int where it is one dimension.

    ``cases``: ``(input shape, k)``, normalizing over the last ``k`` dimensions."""
    gen = torch.Generator().manual_seed(seed)
    for shape, k in cases:
        trailing = tuple(shape[-k:])
        for x, weight, bias in _in_each_dtype(dtypes, _input(shape, gen), *_params(trailing, gen)):
            dims = list(range(x.dim() - k, x.dim()))
            precision = precision_scale(x, dims)                 # per example (leading index)
            calls = [(trailing, None, None), (trailing, weight, bias)]
            if k == 1:
                calls.append((shape[-1], weight, bias))
            for shape_arg, w, b in calls:
                options = "" if w is None else ", weight, bias"
                what = f"layer_norm(x of shape {tuple(shape)} {x.dtype}, normalized_shape={shape_arg}{options})"
                got = call(layer_norm, x.clone(), shape_arg, w, b, eps=eps, what=what,
                           hint=_INT_SHAPE_HINT if isinstance(shape_arg, int) else _AFFINE_HINT)
                assert_tensor(got, exact(_ref_layer, x, trailing, w, b, eps=eps), what=what,
                              scale=_scale(precision, w),
                              mistakes=precision_mistakes(x, dtypes, _layer_mistakes(x, dims, k, eps, w, b)))


@_checks("instance_norm")
def check_instance_norm(instance_norm, *, seed: int = 0,
                        shapes: Sequence[tuple[int, ...]] = ((3, 4, 4), (4, 3, 6), (2, 3, 4, 5)),
                        dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES, eps: float = 1e-5) -> None:
    """Each channel of each example normalized over its positions; per-channel ``weight``/``bias``."""
    gen = torch.Generator().manual_seed(seed)
    for shape in shapes:
        for x, weight, bias in _in_each_dtype(dtypes, _input(shape, gen), *_params((shape[1],), gen)):
            dims = list(range(2, x.dim()))
            precision = precision_scale(x, dims)                 # per channel of each example
            for w, b in ((None, None), (weight, bias)):
                options = "" if w is None else ", weight, bias"
                what = f"instance_norm(x of shape {tuple(shape)} {x.dtype}{options})"
                got = call(instance_norm, x.clone(), w, b, eps=eps, what=what, hint=_AFFINE_HINT)
                assert_tensor(got, exact(_ref_instance, x, None, None, w, b, eps=eps), what=what,
                              scale=_scale(precision, _channel_view(w, x)),
                              mistakes=precision_mistakes(x, dtypes, _instance_mistakes(x, dims, eps, w, b)))


@_checks("group_norm")
def check_group_norm(group_norm, *, seed: int = 0,
                     cases: Sequence[tuple[tuple[int, ...], int]] = (((3, 4, 4), 2), ((2, 6, 5), 3),
                                                                    ((2, 8, 3, 3), 4), ((2, 6, 4), 1), ((2, 6, 4), 6)),
                     dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES, eps: float = 1e-5) -> None:
    """Consecutive groups of channels normalized per example over (C/G, positions); per-channel
    ``weight``/``bias``; a ``num_groups`` that does not divide C raises ``ValueError``."""
    gen = torch.Generator().manual_seed(seed)
    for shape, G in cases:
        N, C = shape[:2]
        for x, weight, bias in _in_each_dtype(dtypes, _input(shape, gen), *_params((C,), gen)):
            grouped = x.reshape(N, G, -1)                               # (N, G, C//G * positions)
            precision = precision_scale(grouped, [2]).expand_as(grouped).reshape(x.shape)   # per group
            for w, b in ((None, None), (weight, bias)):
                options = "" if w is None else ", weight, bias"
                what = f"group_norm(x of shape {tuple(shape)} {x.dtype}, num_groups={G}{options})"
                got = call(group_norm, x.clone(), G, w, b, eps=eps, what=what, hint=_AFFINE_HINT)
                assert_tensor(got, exact(_ref_group, x, G, w, b, eps=eps), what=what,
                              scale=_scale(precision, _channel_view(w, x)),
                              mistakes=precision_mistakes(x, dtypes, _group_mistakes(x, G, eps, w, b)))
    x = _input((2, 6, 4), gen)
    expect_value_error(group_norm, x, 4, what="group_norm(x with 6 channels, num_groups=4)", names=("6", "4"),
                       why="6 channels cannot be split into 4 equal groups, so the call is an error.",
                       example="num_channels (6) must be divisible by num_groups (4)")
