"""Checks for the ``smoothness`` lab: the student's internal-covariate-shift measurement and
loss-landscape probe, graded against :mod:`coursekit.smoothness`.

The student's functions run on small float64 MLPs, with and without batch normalization,
in training and in evaluation mode. Besides the values, the checks verify that the model
comes back exactly as it was (parameters, BatchNorm running statistics, mode), and they
recognise the classic mistakes: G' computed after updating every layer (the measured one
included), the probe stepping along +g, and probing a BN network in the wrong mode::

    check_ics(internal_covariate_shift, points=6)
    check_probe(landscape_probe, points=6)
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from coursekit import smoothness as _reference
from coursekit.grading import CheckFailure, call, check_own_work, preview
from coursekit.modes import modes_of

__all__ = ["check_ics", "check_probe", "mlp"]

_ref_ics, _ref_probe = _reference.internal_covariate_shift, _reference.landscape_probe
_READY_MADE = [(_reference, "internal_covariate_shift"), (_reference, "landscape_probe")]


def _checks(name: str):
    return check_own_work(name, _READY_MADE, what="measurement (coursekit.smoothness)")


def mlp(depth: int = 3, width: int = 16, bn: bool = False, inputs: int = 40, outputs: int = 10) -> nn.Sequential:
    """``depth`` blocks ``Linear -> [BatchNorm1d] -> ReLU``, then a linear output layer."""
    layers, size = [], inputs
    for _ in range(depth):
        layers += [nn.Linear(size, width)] + ([nn.BatchNorm1d(width)] if bn else []) + [nn.ReLU()]
        size = width
    return nn.Sequential(*layers, nn.Linear(size, outputs))


def _setup(seed: int, depth: int, bn: bool, train_mode: bool):
    torch.manual_seed(seed)
    model = mlp(depth, 12, bn).double()
    gen = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(24, 40, generator=gen, dtype=torch.float64) * 2 + 0.5
    y = torch.randint(0, 10, (24,), generator=gen)
    with torch.no_grad():               # BN statistics that differ from the batch's
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1, generator=gen)
                m.running_var.uniform_(0.5, 2, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
    model.train(train_mode)
    return model, x, y


def _describe(depth, bn, train_mode) -> str:
    return (f"a {depth}-block MLP {'with' if bn else 'without'} BatchNorm in "
            f"{'training' if train_mode else 'evaluation'} mode")


def _check_left_alone(model: nn.Module, state: dict, modes: list[bool], what: str) -> None:
    now = model.state_dict()
    # A BatchNorm layer's num_batches_tracked only matters with momentum=None (a cumulative
    # average); otherwise it is a counter that changes nothing the model computes, and the
    # notebook asks to restore the parameters, running statistics and mode.
    counters = {f"{name}.num_batches_tracked" for name, m in model.named_modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is not None}
    changed = [k for k in state if k not in counters and not torch.equal(state[k], now[k])]
    if changed:
        raise CheckFailure(f"{what} changed the model: {', '.join(changed[:4])}{' ...' if len(changed) > 4 else ''} "
                           f"differ afterwards. A measurement must leave the model exactly as it was: "
                           f"keep a copy of model.state_dict() (parameters *and* BatchNorm running "
                           f"statistics) and load it back at the end.")
    if modes_of(model) != modes:
        raise CheckFailure(f"{what} changed the model's training/evaluation mode; restore it (and "
                           f"measure in the mode the model is in).")


def _as_vector(got, n: int, name: str, what: str) -> torch.Tensor:
    if type(got) is not torch.Tensor or got.dim() != 1 or len(got) != n:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise CheckFailure(f"{what}: {name} should be a 1-D torch.Tensor of length {n}, got {shape}.")
    return got.detach().double().cpu()


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b.double(), rtol=1e-6, atol=1e-10)


def _ics_all_updated(model, x, y, lr) -> torch.Tensor:
    """The mistake: G' taken after a step of *every* parameter, the layer's own included."""
    model = copy.deepcopy(model)
    params = [p for p in model.parameters() if p.requires_grad]
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(lr * g)
    moved = torch.autograd.grad(F.cross_entropy(model(x), y), [m.weight for m in layers])
    index = {id(p): i for i, p in enumerate(params)}
    return torch.stack([(grads[index[id(m.weight)]] - g2).norm() for m, g2 in zip(layers, moved)])


ICS_CASES = ((3, False, True), (3, True, True), (4, True, False), (2, False, True))


@_checks("internal_covariate_shift")
def check_ics(internal_covariate_shift, *, seed: int = 0,
              cases: Sequence[tuple[int, bool, bool]] = ICS_CASES, lr: float = 0.5) -> None:
    """``internal_covariate_shift(model, loss_fn, x, y, lr) -> (l2, cosine)``, one value per
    ``Linear`` layer, the model left as it was."""
    for depth, bn, train_mode in cases:
        model, x, y = _setup(seed + depth, depth, bn, train_mode)
        reference = _ref_ics(copy.deepcopy(model), F.cross_entropy, x, y, lr=lr)
        state, modes = copy.deepcopy(model.state_dict()), modes_of(model)
        what = f"internal_covariate_shift({_describe(depth, bn, train_mode)}, lr={lr})"
        got = call(internal_covariate_shift, model, F.cross_entropy, x, y, lr, what=what)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise CheckFailure(f"{what} should return a tuple (l2, cosine), got {type(got).__name__}.")
        n = len(reference["l2"])
        l2, cosine = (_as_vector(v, n, name, what) for v, name in zip(got, ("l2", "cosine")))
        _check_left_alone(model, state, modes, what)
        if _close(l2, reference["l2"]) and _close(cosine, reference["cosine"]):
            continue
        lines = [f"{what} returned wrong values.",
                 f"  l2 expected:     {preview(reference['l2'])}", f"  l2 got:          {preview(l2)}",
                 f"  cosine expected: {preview(reference['cosine'])}", f"  cosine got:      {preview(cosine)}"]
        if _close(l2, _ics_all_updated(model, x, y, lr)):
            lines.append("Likely mistake: G' was computed after updating every layer, the measured one "
                         "included. Definition 2.1 updates only the layers *before* layer i, so that "
                         "what changes is the distribution of layer i's input, not its own weights.")
        elif l2[0] > 0 and reference["l2"][0] == 0:
            lines.append("Hint: the first layer has no layer before it, so its G' equals G and its ICS is 0.")
        raise CheckFailure("\n".join(lines))


def _probe_variant(model, x, y, step_sizes, sign=1.0, mode=None):
    """The probe of a copy of the model, stepping along ``-sign * g``, in ``mode`` if given."""
    model = copy.deepcopy(model)
    if mode is not None:
        model.train(mode)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    old = [p.detach().clone() for p in params]
    losses = []
    for eta in step_sizes:
        with torch.no_grad():
            for p, w, g in zip(params, old, grads):
                p.copy_(w - sign * eta * g)
        losses.append(F.cross_entropy(model(x), y).detach())
    return torch.stack(losses).double()


PROBE_CASES = ((3, True, True), (2, False, True), (3, True, False))
STEP_SIZES = (0.01, 0.1, 0.5, 1.0)


@_checks("landscape_probe")
def check_probe(landscape_probe, *, seed: int = 0, cases: Sequence[tuple[int, bool, bool]] = PROBE_CASES,
                step_sizes: Sequence[float] = STEP_SIZES) -> None:
    """``landscape_probe(model, loss_fn, x, y, step_sizes) -> (losses, grad_changes, beta)``
    along ``-g``, in the model's own mode, the model left as it was."""
    for depth, bn, train_mode in cases:
        model, x, y = _setup(seed + 10 * depth, depth, bn, train_mode)
        reference = _ref_probe(copy.deepcopy(model), F.cross_entropy, x, y, step_sizes)
        state, modes = copy.deepcopy(model.state_dict()), modes_of(model)
        what = f"landscape_probe({_describe(depth, bn, train_mode)}, step_sizes={list(step_sizes)})"
        got = call(landscape_probe, model, F.cross_entropy, x, y, list(step_sizes), what=what)
        if not (isinstance(got, tuple) and len(got) == 3):
            raise CheckFailure(f"{what} should return a tuple (losses, grad_changes, beta), got "
                               f"{type(got).__name__}.")
        n = len(step_sizes)
        losses, changes = (_as_vector(v, n, name, what) for v, name in zip(got[:2], ("losses", "grad_changes")))
        try:
            beta = float(got[2])
        except (TypeError, ValueError):
            raise CheckFailure(f"{what}: beta should be a number, got {type(got[2]).__name__}.") from None
        _check_left_alone(model, state, modes, what)
        if _close(losses, reference["loss"]) and _close(changes, reference["grad_change"]) and \
                abs(beta - reference["beta"]) <= 1e-6 * abs(reference["beta"]):
            continue
        lines = [f"{what} returned wrong values.",
                 f"  losses expected:       {preview(reference['loss'])}", f"  losses got:            {preview(losses)}",
                 f"  grad_changes expected: {preview(reference['grad_change'])}",
                 f"  grad_changes got:      {preview(changes)}",
                 f"  beta expected {reference['beta']:.6g}, got {beta:.6g}"]
        if _close(losses, _probe_variant(model, x, y, step_sizes, sign=-1.0)):
            lines.append("Likely mistake: the probe steps along +g; gradient descent moves to w - eta * g.")
        elif bn and _close(losses, _probe_variant(model, x, y, step_sizes, mode=not train_mode)):
            mode = "training" if train_mode else "evaluation"
            lines.append(f"Likely mistake: the probe ran the BatchNorm network in the other mode. Probe "
                         f"in the mode the model is in (here {mode} mode): in training mode BN uses the "
                         f"batch's statistics, as the optimizer sees them; model.eval() would use the "
                         f"running averages instead, a different function.")
        elif _close(losses, reference["loss"]) and not _close(changes, reference["grad_change"]):
            lines.append("Hint: the losses are right; grad_changes is ||grad L(w - eta g) - grad L(w)||, "
                         "over all parameters together.")
        elif _close(losses, reference["loss"]) and _close(changes, reference["grad_change"]):
            lines.append("Hint: beta is the largest grad_change / ||eta g|| over the step sizes.")
        raise CheckFailure("\n".join(lines))

