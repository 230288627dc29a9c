"""Checks for the ``normalization`` assignment: the student's ``layer_norm``, ``instance_norm``
and ``group_norm``.

Each check compares the student's function with :mod:`coursekit.norm` on seeded random
inputs whose examples and channels differ in mean and spread, in float32 and float64,
recognises the classic mistakes and returns its points (see :mod:`coursekit.grading`)::

    check_layer_norm(layer_norm, points=5)
    check_group_norm(group_norm, points=6)
"""
from __future__ import annotations

from typing import Sequence

import torch

from coursekit import norm as _reference
from coursekit.grading import assert_tensor, call, check_own_work, expect_value_error, imprecise_variance

__all__ = ["check_layer_norm", "check_instance_norm", "check_group_norm"]

DEFAULT_DTYPES = (torch.float32, torch.float64)

# The references, taken before any ready-made function is forbidden inside a check.
_ref_layer, _ref_instance, _ref_group = _reference.layer_norm, _reference.instance_norm, _reference.group_norm
_READY_MADE = [(torch.nn.functional, "layer_norm"), (torch.nn.functional, "instance_norm"),
               (torch.nn.functional, "group_norm"), (torch, "layer_norm"), (torch, "instance_norm"),
               (torch, "group_norm"), (torch, "native_layer_norm"), (torch, "native_group_norm"),
               (_reference, "layer_norm"), (_reference, "instance_norm"), (_reference, "group_norm")]


def _checks(name: str):
    return check_own_work(name, _READY_MADE, what="normalization (torch.nn.functional or coursekit.norm)")


_AFFINE_HINT = ("weight and bias have shape (C,) for instance_norm and group_norm (one value per "
                "channel, reshaped to (1, C, 1, ...)), and the shape normalized_shape for layer_norm.")


def _input(shape, dtype, gen):
    """Examples and channels with different means and spreads."""
    f64 = dict(generator=gen, dtype=torch.float64)
    N, C = shape[:2]
    view = (N, C) + (1,) * (len(shape) - 2)
    x = torch.randn(shape, **f64) * (0.3 + 2 * torch.rand(view, **f64)) + 3 * torch.randn(view, **f64)
    return x.to(dtype)


def _normalized(x, dims, eps, correction=0, eps_outside=False):
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, correction=correction, keepdim=True)
    return (x - mean) / ((var.sqrt() + eps) if eps_outside else torch.sqrt(var + eps))


def _common_mistakes(x, dims, eps, affine):
    return {
        "the variance is the unbiased one (divide by m - 1); normalization layers use the "
        "biased variance (divide by m, correction=0).": affine(_normalized(x, dims, eps, correction=1)),
        "eps is added outside the square root: use sqrt(var + eps), not sqrt(var) + eps.":
            affine(_normalized(x, dims, eps, eps_outside=True)),
    }


def _per_channel(weight, bias):
    """The per-channel affine transform of instance and group norm, as a function of y."""
    return lambda y: _reference._affine_per_channel(y, weight, bias)


def _wrong_axis_affine(weight, bias, x):
    """gamma and beta broadcast against the *last* dimension instead of the channels."""
    def affine(y):
        return y * weight + bias if x.shape[-1] == x.shape[1] else y
    return affine


def _magnitude(weight) -> float:
    """The largest |gamma|: rounding errors of an output are relative to it."""
    return 1.0 if weight is None else max(1.0, weight.abs().max().item())


def _params(shape, dtype, gen):
    f64 = dict(generator=gen, dtype=torch.float64)
    return (0.5 + torch.rand(shape, **f64)).to(dtype), torch.randn(shape, **f64).to(dtype)


@_checks("layer_norm")
def check_layer_norm(layer_norm, *, seed: int = 0,
                     cases: Sequence[tuple[tuple[int, ...], int]] = (((6, 5), 1), ((3, 4, 5), 1), ((3, 4, 5), 2),
                                                                    ((2, 3, 4, 5), 3), ((2, 3, 4, 5), 2)),
                     dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES, eps: float = 1e-5) -> None:
    """Normalization over the trailing ``normalized_shape`` (all of its dimensions), with
    elementwise ``weight``/``bias`` of that shape, also ``None``.

    ``cases``: ``(input shape, k)``, normalizing over the last ``k`` dimensions."""
    gen = torch.Generator().manual_seed(seed)
    for dtype in dtypes:
        for shape, k in cases:
            x = _input(shape, dtype, gen)
            normalized = tuple(shape[-k:])
            dims = list(range(x.dim() - k, x.dim()))
            for weight, bias in ((None, None), _params(normalized, dtype, gen)):
                options = "" if weight is None else ", weight, bias"
                what = f"layer_norm(x of shape {tuple(shape)} {dtype}, normalized_shape={normalized}{options})"
                got = call(layer_norm, x.clone(), normalized, weight, bias, eps=eps, what=what,
                           hint=_AFFINE_HINT)

                def affine(y, weight=weight, bias=bias):
                    return y if weight is None else y * weight + bias
                mistakes = _common_mistakes(x, dims, eps, affine)
                if k > 1:
                    mistakes["only the last dimension is normalized, but normalized_shape has "
                             f"{k} dimensions: reduce over all of the last {k} dimensions."] = \
                        affine(_normalized(x, [-1], eps))
                mistakes.update(imprecise_variance(x, dims, scale=_magnitude(weight), what="an example"))
                assert_tensor(got, _ref_layer(x, normalized, weight, bias, eps=eps), what=what,
                              mistakes=mistakes)


@_checks("instance_norm")
def check_instance_norm(instance_norm, *, seed: int = 0,
                        shapes: Sequence[tuple[int, ...]] = ((3, 4, 4), (4, 3, 6), (2, 3, 4, 5)),
                        dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES, eps: float = 1e-5) -> None:
    """Each channel of each example normalized over its positions; per-channel ``weight``/``bias``."""
    gen = torch.Generator().manual_seed(seed)
    for dtype in dtypes:
        for shape in shapes:
            x = _input(shape, dtype, gen)
            dims = list(range(2, x.dim()))
            for weight, bias in ((None, None), _params((shape[1],), dtype, gen)):
                options = "" if weight is None else ", weight, bias"
                what = f"instance_norm(x of shape {tuple(shape)} {dtype}{options})"
                got = call(instance_norm, x.clone(), weight, bias, eps=eps, what=what, hint=_AFFINE_HINT)
                affine = _per_channel(weight, bias)
                mistakes = _common_mistakes(x, dims, eps, affine)
                mistakes["the statistics include the batch dimension N (that is batch norm): "
                         "instance norm normalizes each example separately, over its positions only."] = \
                    affine(_normalized(x, [0, *dims], eps))
                mistakes["the statistics include the channels (that is layer norm): instance norm "
                         "normalizes each channel separately, over the positions only."] = \
                    affine(_normalized(x, [1, *dims], eps))
                if weight is not None:
                    mistakes["weight and bias are applied along the last dimension; they are per "
                             "channel (dimension 1): reshape them to (1, C, 1, ...)."] = \
                        _wrong_axis_affine(weight, bias, x)(_normalized(x, dims, eps))
                mistakes.update(imprecise_variance(x, dims, scale=_magnitude(weight),
                                                   what="a channel of an example"))
                assert_tensor(got, _ref_instance(x, weight=weight, bias=bias, eps=eps), what=what, mistakes=mistakes)


@_checks("group_norm")
def check_group_norm(group_norm, *, seed: int = 0,
                     cases: Sequence[tuple[tuple[int, ...], int]] = (((3, 4, 4), 2), ((2, 6, 5), 3),
                                                                    ((2, 8, 3, 3), 4), ((2, 6, 4), 1), ((2, 6, 4), 6)),
                     dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES, eps: float = 1e-5) -> None:
    """Consecutive groups of channels normalized per example over (C/G, positions); per-channel
    ``weight``/``bias``; a ``num_groups`` that does not divide C raises ``ValueError``."""
    gen = torch.Generator().manual_seed(seed)
    for dtype in dtypes:
        for shape, G in cases:
            x = _input(shape, dtype, gen)
            N, C = shape[:2]
            for weight, bias in ((None, None), _params((C,), dtype, gen)):
                options = "" if weight is None else ", weight, bias"
                what = f"group_norm(x of shape {tuple(shape)} {dtype}, num_groups={G}{options})"
                got = call(group_norm, x.clone(), G, weight, bias, eps=eps, what=what, hint=_AFFINE_HINT)
                affine = _per_channel(weight, bias)
                grouped = x.reshape(N, G, -1)                                   # (N, G, C//G * positions)
                mistakes = {k: v.view(x.shape) for k, v in _common_mistakes(grouped, [2], eps, lambda y: y).items()}
                mistakes = {k: affine(v) for k, v in mistakes.items()}
                interleaved = x.reshape(N, C // G, G, -1)                       # wrong: (N, C//G, G, positions)
                mistakes["the channels are grouped in the wrong order: group g holds the consecutive "
                         "channels g*C/G ... (g+1)*C/G - 1, so reshape to (N, G, C // G, ...), not "
                         "(N, C // G, G, ...)."] = affine(_normalized(interleaved, [1, 3], eps).view(x.shape))
                mistakes["the statistics include the batch dimension N: group norm normalizes each "
                         "example separately."] = affine(_normalized(grouped, [0, 2], eps).view(x.shape))
                if weight is not None:
                    mistakes["weight and bias are applied along the last dimension; they are per "
                             "channel (dimension 1): reshape them to (1, C, 1, ...)."] = \
                        _wrong_axis_affine(weight, bias, x)(_normalized(grouped, [2], eps).view(x.shape))
                mistakes.update(imprecise_variance(grouped, [2], shape=x.shape, scale=_magnitude(weight),
                                                   what="a group of an example"))
                assert_tensor(got, _ref_group(x, G, weight, bias, eps=eps), what=what, mistakes=mistakes)
    x = _input((2, 6, 4), torch.float64, gen)
    expect_value_error(group_norm, x, 4, what="group_norm(x with 6 channels, num_groups=4)", names=("6", "4"),
                       why="6 channels cannot be split into 4 equal groups, so the call is an error.",
                       example="num_channels (6) must be divisible by num_groups (4)")
