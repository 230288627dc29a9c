"""Why batch normalization works: the measurements of Santurkar, Tsipras, Ilyas & Madry (2018),
"How does batch normalization help optimization?".

- :class:`NoisyBatchNorm1d`: a BatchNorm layer made noisy on purpose, whose output
  distribution changes at every step;
- :func:`internal_covariate_shift`: internal covariate shift as a change of gradients
  (their Definition 2.1);
- :func:`landscape_probe`: the loss and the gradient along the gradient direction (loss
  variation, gradient predictiveness, effective smoothness).

Both measurements leave the model exactly as it was: parameters, BatchNorm running
statistics and each submodule's training mode::

    >>> ics = internal_covariate_shift(model, F.cross_entropy, x, y, lr=0.1)
    >>> ics["l2"], ics["cosine"]                  # one value per Linear/Conv layer
    >>> probe = landscape_probe(model, F.cross_entropy, x, y, step_sizes=[0.01, 0.1, 1.0])
    >>> probe["beta"]                             # the effective beta-smoothness
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from torch import nn

from coursekit.init import WEIGHTED_LAYERS
from coursekit.modes import restored_modes

__all__ = ["NoisyBatchNorm1d", "internal_covariate_shift", "landscape_probe"]


class NoisyBatchNorm1d(nn.BatchNorm1d):
    r"""Batch normalization followed by noise that shifts and rescales its output at every step.

    Santurkar et al.'s (2018) "noisy BN": the output of batch norm is made *less* stable on
    purpose, to test whether stable layer input distributions are what makes BN work. In
    training mode, at every forward pass, the layer draws

    .. math::
        \mu \sim U(-a, a), \quad \sigma \sim U(s_0, s_1) \quad \text{(once per step)}, \qquad
        m_i \sim U(\mu - j, \mu + j), \quad s_i \sim \mathcal N(\sigma, j^2) \quad \text{(per element)},

    and returns :math:`y_i = s_i\,\mathrm{BN}(x)_i + m_i`. In eval mode it is plain batch norm.

    Args:
        num_features: :math:`C`, as for :class:`torch.nn.BatchNorm1d`.
        mean_range: :math:`a`. Default: 0.5.
        std_range: :math:`(s_0, s_1)`. Default: ``(1.0, 1.25)``.
        jitter: :math:`j`. Default: 0.1.
        generator: the random number generator of the noise. Default: torch's global one.
        **kwargs: ``eps``, ``momentum``, ``affine``, ... of :class:`torch.nn.BatchNorm1d`.

    Shape:
        :math:`(N, C)` or :math:`(N, C, L)`, as :class:`torch.nn.BatchNorm1d`.
    """

    def __init__(self, num_features: int, *, mean_range: float = 0.5,
                 std_range: tuple[float, float] = (1.0, 1.25), jitter: float = 0.1,
                 generator: torch.Generator | None = None, **kwargs):
        super().__init__(num_features, **kwargs)
        low, high = std_range
        if not (mean_range >= 0 and 0 <= low <= high and jitter >= 0):
            raise ValueError(f"need mean_range >= 0, 0 <= std_range[0] <= std_range[1] and jitter >= 0, "
                             f"got mean_range={mean_range}, std_range={std_range}, jitter={jitter}")
        self.mean_range, self.std_range, self.jitter = float(mean_range), (float(low), float(high)), float(jitter)
        self.generator = generator

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = super().forward(input)
        if not self.training:
            return out
        gen, device = self.generator, (self.generator.device if self.generator is not None else out.device)
        draw = dict(generator=gen, device=device, dtype=out.dtype)
        low, high = self.std_range
        mu = (torch.rand((), **draw) * 2 - 1) * self.mean_range                  # per step
        sigma = low + torch.rand((), **draw) * (high - low)
        m = mu + (torch.rand(out.shape, **draw) * 2 - 1) * self.jitter           # per element
        s = sigma + torch.randn(out.shape, **draw) * self.jitter
        return s.to(out.device) * out + m.to(out.device)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", mean_range={self.mean_range}, std_range={self.std_range}, "
                f"jitter={self.jitter}")


def _loss_and_grads(model, loss_fn, x, y, params):
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.detach(), [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]


@contextlib.contextmanager
def _restored(model: nn.Module) -> Iterator[None]:
    """Inside the block the model's parameters and buffers may change; on exit they are put
    back exactly (BatchNorm running statistics included), and each submodule's mode too."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with restored_modes(model):
        try:
            yield
        finally:
            model.load_state_dict(state)


def internal_covariate_shift(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, *,
                             lr: float | None = None, optimizer: torch.optim.Optimizer | None = None,
                             layers=None) -> dict:
    r"""Internal covariate shift as a change of gradients (Santurkar et al. 2018, Definition 2.1).

    Let :math:`G_i = \nabla_{W_i} L(W_1, \dots, W_k; x, y)` be the gradient of layer
    :math:`i`'s weight on the batch, and take one step of every parameter,
    :math:`W_j \to W_j'`: a plain gradient step :math:`W_j' = W_j - \eta \nabla_{W_j} L`,
    or the step that the training ``optimizer`` would take from these gradients. Then

    .. math::
        G_i' = \nabla_{W_i} L(W_1', \dots, W_{i-1}', W_i, \dots, W_k; x, y)

    is the same layer's gradient on the same batch after only the layers *before* it were
    updated: what changed is the distribution of layer :math:`i`'s input. The ICS of layer
    :math:`i` is :math:`\|G_i - G_i'\|_2`, and :math:`\cos(G_i, G_i')` tells how much the
    direction changed. "Before" means every parameter registered before the layer's weight
    (earlier layers' biases and BatchNorm scales included).

    The model is left exactly as it was: parameters, BatchNorm running statistics and mode.
    It runs in the model's current mode (training mode: batch statistics, as in training).

    Args:
        model: the network.
        loss_fn: ``loss_fn(model(x), y)``, a scalar.
        x, y: the batch.
        lr: :math:`\eta`, for a plain gradient step; or
        optimizer: the training optimizer, whose step is taken (and undone: its state, e.g.
            momentum buffers, and the parameters' ``.grad`` are left as they were).
        layers: the layers whose weights are measured: default every ``Linear`` and
            ``Conv{1,2,3}d``, in the order of ``model.modules()``; or a list of modules.

    Returns:
        ``{"l2": tensor (L,), "cosine": tensor (L,)}``, float64, one value per layer.
    """
    if (lr is None) == (optimizer is None):
        raise ValueError("give either lr (a plain gradient step) or optimizer (its step), not both or neither")
    layers = [m for m in model.modules() if isinstance(m, WEIGHTED_LAYERS)] if layers is None else list(layers)
    if not layers:
        raise ValueError(f"no Linear or Conv layer in {type(model).__name__} to measure")
    params = [p for p in model.parameters() if p.requires_grad]
    index = {id(p): i for i, p in enumerate(params)}
    with _restored(model):
        _, grads = _loss_and_grads(model, loss_fn, x, y, params)
        old = [p.detach().clone() for p in params]
        if optimizer is None:
            new = [w - lr * g for w, g in zip(old, grads)]
        else:
            new = _optimizer_step(optimizer, params, grads)
        l2, cosine = [], []
        for layer in layers:
            if id(layer.weight) not in index:
                raise ValueError(f"the layer {layer} is not a trainable part of the model")
            i = index[id(layer.weight)]
            with torch.no_grad():
                for j, p in enumerate(params):
                    p.copy_(new[j] if j < i else old[j])
            _, shifted = _loss_and_grads(model, loss_fn, x, y, params)
            g, g2 = grads[i].flatten().double(), shifted[i].flatten().double()
            l2.append((g - g2).norm())
            cosine.append(torch.dot(g, g2) / (g.norm() * g2.norm()).clamp_min(1e-300))
    return {"l2": torch.stack(l2).cpu(), "cosine": torch.stack(cosine).cpu()}


def _optimizer_step(optimizer: torch.optim.Optimizer, params, grads) -> list[torch.Tensor]:
    """The parameters after ``optimizer.step()`` with ``grads``; the optimizer's state and the
    parameters' ``.grad`` are put back (the parameters themselves by the caller)."""
    saved_state = copy.deepcopy(optimizer.state_dict())
    saved_grads = [p.grad for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    optimizer.step()
    new = [p.detach().clone() for p in params]
    optimizer.load_state_dict(saved_state)
    for p, g in zip(params, saved_grads):
        p.grad = g
    return new


def landscape_probe(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor,
                    step_sizes) -> dict:
    r"""Probe the loss landscape along the negative gradient (Santurkar et al. 2018, §3.1).

    With all parameters :math:`w` and the gradient :math:`g = \nabla L(w)` on the batch, for
    each step size :math:`\eta` in ``step_sizes``:

    - *loss variation*: :math:`L(w - \eta g)`; the spread of these values over the step sizes
      shows how much the loss can change along the step direction;
    - *gradient predictiveness*: :math:`\|\nabla L(w - \eta g) - \nabla L(w)\|_2`: how far
      the gradient at the new point is from the one that chose the step (small = the
      gradient is a reliable guide);
    - *effective* :math:`\beta`*-smoothness*:
      :math:`\max_\eta \|\nabla L(w - \eta g) - \nabla L(w)\|_2 / \|\eta g\|_2`, the largest
      change of the gradient per unit of distance moved: a Lipschitz constant of the
      gradient, measured along the path (for a quadratic :math:`\tfrac12 w^\top A w`, it is
      :math:`\|Ag\|/\|g\|`).

    The model is left exactly as it was (parameters, BatchNorm running statistics, mode);
    the probe runs in the model's current mode, so a network in training mode is probed
    with batch statistics, as the optimizer sees it.

    Returns:
        ``{"step_sizes", "loss", "grad_change", "beta"}``: the step sizes (float64,
        :math:`(S,)`), the losses and gradient changes at each (:math:`(S,)`), and the
        effective smoothness (a float); also ``"loss_at_start"`` and ``"grad_norm"``.
    """
    etas = torch.as_tensor(list(step_sizes), dtype=torch.float64)
    if etas.dim() != 1 or len(etas) == 0 or not bool((etas > 0).all()):
        raise ValueError(f"step_sizes must be a non-empty sequence of positive numbers, got {list(step_sizes)}")
    params = [p for p in model.parameters() if p.requires_grad]
    with _restored(model):
        loss0, grads = _loss_and_grads(model, loss_fn, x, y, params)
        old = [p.detach().clone() for p in params]
        flat0 = torch.cat([g.flatten().double() for g in grads])
        losses, changes = [], []
        for eta in etas.tolist():
            with torch.no_grad():
                for p, w, g in zip(params, old, grads):
                    p.copy_(w - eta * g)
            loss, moved = _loss_and_grads(model, loss_fn, x, y, params)
            losses.append(loss.double())
            changes.append((torch.cat([g.flatten().double() for g in moved]) - flat0).norm())
    losses, changes = torch.stack(losses).cpu(), torch.stack(changes).cpu()
    grad_norm = flat0.norm().cpu()
    return {"step_sizes": etas, "loss": losses, "grad_change": changes,
            "beta": float((changes / (etas * grad_norm)).max()),
            "loss_at_start": float(loss0), "grad_norm": float(grad_norm)}
