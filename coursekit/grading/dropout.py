"""Checks for the ``dropout`` assignment: the student's inverted ``dropout``.

Dropout is random, so the checks judge what must hold for *any* mask: on large inputs the
kept fraction lies within 6 standard errors of :math:`1 - p`; every kept value is exactly
:math:`x / (1 - p)`; the gradient is the same mask divided by :math:`1 - p`; nothing
changes in evaluation mode; ``p = 1`` gives zeros, not NaN; a bad ``p`` is an error; the
same ``generator`` seed gives the same mask::

    check_dropout_forward(dropout, points=5)
    check_dropout_backward(dropout, points=5)
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from coursekit import regularization as _reference
from coursekit.grading import CheckFailure, call, check_own_work, expect_value_error

__all__ = ["check_dropout_forward", "check_dropout_eval", "check_dropout_backward",
           "check_dropout_edge_cases"]

_READY_MADE = [(torch.nn.functional, "dropout"), (torch, "dropout"), (torch, "native_dropout"),
               (torch.nn.functional, "dropout1d"), (torch.nn.functional, "alpha_dropout"),
               (_reference, "dropout"), (_reference.stochastic, "dropout")]


# What a solution may not call, by any route: the trusted grader's worker watches for torch's
# functions, builtins and operators of these names (coursekit.classroom.worker).
FORBIDDEN = ("dropout", "native_dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d",
             "dropout2d", "dropout3d")
FORBIDDEN_WHAT = "dropout (torch.nn.functional.dropout)"

def _checks(name: str):
    return check_own_work(name, _READY_MADE, what="dropout (torch.nn.functional.dropout or coursekit)")


def _input(shape, dtype, gen, requires_grad=False) -> torch.Tensor:
    """Values in [0.5, 1.5): never 0, so a 0 in the output means dropped."""
    x = (torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
    return x.requires_grad_() if requires_grad else x


def _result(got, x: torch.Tensor, what: str) -> torch.Tensor:
    if type(got) is not torch.Tensor:
        raise CheckFailure(f"{what} should return a torch.Tensor, got {type(got).__name__}.")
    if got.shape != x.shape or got.dtype != x.dtype:
        raise CheckFailure(f"{what} returned shape {tuple(got.shape)} and dtype {got.dtype}; the "
                           f"output has the input's shape {tuple(x.shape)} and dtype {x.dtype} (create "
                           f"the mask with dtype=input.dtype, or as booleans).")
    if torch.isnan(got).any():
        raise CheckFailure(f"{what} returned NaN: is something divided by zero?")
    return got.detach()


FORWARD_CASES = ((0.2, (400, 500)), (0.5, (200, 30, 40)), (0.8, (250_000,)))


@_checks("dropout")
def check_dropout_forward(dropout, *, seed: int = 0,
                          cases: Sequence[tuple[float, tuple[int, ...]]] = FORWARD_CASES,
                          dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64)) -> None:
    """In training: a fraction :math:`1-p` of the elements kept (within 6 standard errors),
    each kept value exactly :math:`x/(1-p)` (to rounding), the rest 0."""
    gen = torch.Generator().manual_seed(seed)
    for dtype in dtypes:
        for p, shape in cases:
            x = _input(shape, dtype, gen)
            what = f"dropout(x of shape {tuple(shape)} {dtype}, p={p})"
            got = _result(call(dropout, x, p, True, torch.Generator().manual_seed(seed + 1), what=what), x, what)
            kept = got != 0
            fraction, n = kept.double().mean().item(), x.numel()
            sigma = math.sqrt(p * (1 - p) / n)
            if abs(fraction - (1 - p)) > 6 * sigma:
                hint = ""
                if abs(fraction - p) <= 6 * sigma:
                    hint = ("\nLikely mistake: p is used as the probability of keeping an element; in "
                            "PyTorch's convention p is the probability of *dropping* it (the paper's "
                            "retention probability is 1 - p).")
                raise CheckFailure(f"{what} kept {100 * fraction:.2f} % of the elements; with p={p} "
                                   f"about {100 * (1 - p):.0f} % should be kept (each element is "
                                   f"dropped with probability p).{hint}")
            values, inputs = got[kept], x[kept]
            expected = inputs / (1 - p)
            if torch.allclose(values, expected):
                continue
            hint = ""
            if torch.allclose(values, inputs):
                hint = ("the kept values are not rescaled: inverted dropout divides them by 1 - p, so "
                        "that each element keeps its expected value and nothing changes at test time.")
            elif torch.allclose(values, inputs * (1 - p)):
                hint = ("the kept values are multiplied by 1 - p; inverted dropout *divides* by 1 - p "
                        "during training (multiplying the weights by the retention probability is the "
                        "paper's rule at *test* time).")
            elif torch.allclose(values, inputs / p):
                hint = "the kept values are divided by p; divide by 1 - p, the probability of keeping."
            raise CheckFailure(f"{what}: the kept elements should equal x / (1 - p), e.g. "
                               f"{inputs[0].item():.6g} / {1 - p:.2g} = {expected[0].item():.6g}, "
                               f"but are {values[0].item():.6g}." + (f"\nLikely mistake: {hint}" if hint else ""))


@_checks("dropout")
def check_dropout_eval(dropout, *, seed: int = 0) -> None:
    """``training=False`` returns the input unchanged, and so does ``p=0``."""
    gen = torch.Generator().manual_seed(seed)
    x = _input((64, 100), torch.float32, gen)
    for p, training, text in ((0.5, False, "p=0.5, training=False"), (0.0, True, "p=0.0, training=True")):
        what = f"dropout(x, {text})"
        got = _result(call(dropout, x, p, training, what=what), x, what)
        if not torch.equal(got, x):
            changed = (got != x).double().mean().item()
            mode = ("In evaluation mode (training=False) dropout is the identity: inverted dropout "
                    "already rescaled during training, so the network is used as it is."
                    if not training else "With p = 0 nothing is dropped and nothing is rescaled.")
            raise CheckFailure(f"{what} changed {100 * changed:.1f} % of the values. {mode}")


BACKWARD_CASES = ((0.3, (50, 40)), (0.5, (8, 6, 25)), (0.75, (1000,)))


@_checks("dropout")
def check_dropout_backward(dropout, *, seed: int = 0,
                           cases: Sequence[tuple[float, tuple[int, ...]]] = BACKWARD_CASES) -> None:
    """The gradient is the forward mask divided by :math:`1-p`: exactly zero where the output
    was dropped, :math:`g/(1-p)` elsewhere (float64)."""
    gen = torch.Generator().manual_seed(seed)
    for p, shape in cases:
        x = _input(shape, torch.float64, gen, requires_grad=True)
        g = torch.randn(shape, generator=gen, dtype=torch.float64)
        what = f"dropout(x of shape {tuple(shape)}, p={p})"
        out = call(dropout, x, p, True, torch.Generator().manual_seed(seed + 2), what=what)
        _result(out, x.detach(), what)
        if not out.requires_grad:
            raise CheckFailure(f"{what} returned a tensor that does not require grad: no gradient "
                               f"reaches the input. Build the output from the input with tensor "
                               f"operations (do not detach it or use .data).")
        call(out.backward, g, what=f"backward through {what}")
        if x.grad is None:
            raise CheckFailure(f"no gradient reached the input of {what}.")
        kept = out.detach() != 0
        expected = torch.where(kept, g / (1 - p), torch.zeros_like(g))
        if torch.allclose(x.grad, expected, rtol=1e-10, atol=1e-12):
            continue
        leaked = (x.grad != 0) & ~kept
        if leaked.any():
            raise CheckFailure(f"backward through {what}: {int(leaked.sum())} elements that were "
                               f"dropped in the forward pass receive a gradient (e.g. {x.grad[leaked][0].item():.4g}). "
                               f"The backward pass must use the same mask as the forward pass: a dropped "
                               f"unit did not contribute to the output, so its gradient is exactly 0 (do not "
                               f"draw a new mask in backward).")
        raise CheckFailure(f"backward through {what}: the gradient of a kept element should be "
                           f"g / (1 - p) = {expected[kept][0].item():.6g}, got {x.grad[kept][0].item():.6g}.")


@_checks("dropout")
def check_dropout_edge_cases(dropout, *, seed: int = 0) -> None:
    """``p=1`` gives zeros (no NaN); ``p`` outside [0, 1] raises ``ValueError`` naming it; the
    mask follows the input's dtype and device and the ``generator``."""
    gen = torch.Generator().manual_seed(seed)
    x = _input((30, 20), torch.float32, gen)
    what = "dropout(x, p=1.0)"
    got = call(dropout, x, 1.0, True, what=what,
               hint="with p = 1, 1 / (1 - p) divides by zero: handle p == 1 separately (everything is dropped).")
    if type(got) is torch.Tensor and torch.isnan(got).any():
        raise CheckFailure(f"{what} returned NaN: 1 / (1 - p) divides by zero when p = 1. Every "
                           f"element is dropped, so the output is all zeros: handle p == 1 separately.")
    got = _result(got, x, what)
    if not torch.equal(got, torch.zeros_like(x)):
        raise CheckFailure(f"{what} should drop every element (all zeros), but "
                           f"{int((got != 0).sum())} are non-zero.")
    for p in (-0.1, 1.5):
        expect_value_error(dropout, x, p, what=f"dropout(x, p={p})", names=(str(p),),
                           example=f"dropout probability p must be in [0, 1], got {p}",
                           why="p is a probability, so a value outside [0, 1] is a mistake by the caller "
                               "that should be reported, not silently used.")
    x64 = _input((40, 30), torch.float64, gen)
    what = "dropout(x of dtype float64, p=0.5)"
    _result(call(dropout, x64, 0.5, what=what), x64, what)
    meta = torch.empty(8, 16, device="meta")
    what = "dropout(x on another device, p=0.5)"
    out = call(dropout, meta, 0.5, what=what,
               hint="create the mask on the input's device: torch.rand(input.shape, device=input.device, ...), "
                    "so that dropout also works for tensors on a GPU.")
    if type(out) is not torch.Tensor or out.device != meta.device or out.shape != meta.shape:
        raise CheckFailure(f"{what} returned {type(out).__name__} on {getattr(out, 'device', None)}; "
                           f"the output must be on the input's device ({meta.device}).")
    first = call(dropout, x, 0.5, True, torch.Generator().manual_seed(7), what="dropout(x, 0.5, generator=...)")
    again = call(dropout, x, 0.5, True, torch.Generator().manual_seed(7), what="dropout(x, 0.5, generator=...)")
    other = call(dropout, x, 0.5, True, torch.Generator().manual_seed(8), what="dropout(x, 0.5, generator=...)")
    if not torch.equal(first, again) or torch.equal(first, other):
        raise CheckFailure("dropout(x, 0.5, generator=g): generators seeded alike must give the same "
                           "mask, and another seed another mask: pass generator=generator to the "
                           "function that draws the mask (torch.rand).")
