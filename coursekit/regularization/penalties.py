"""Penalties and constraints on the weights: the L1 penalty and the max-norm constraint.

Weight decay is the L2 penalty, built into the optimizers (``weight_decay=``). The L1
penalty :math:`\\lambda \\|w\\|_1` pushes every weight towards zero by the same amount,
whatever its size, and so sets the weights that the data does not need *exactly* to zero
(a sparse network); L2 shrinks every weight in proportion to its size and sets none to
zero. The max-norm constraint (Srivastava et al. 2014 pair it with dropout) does not
penalize at all: after every step it projects each unit's incoming weight vector back
into the ball :math:`\\|w_i\\|_2 \\le c`, so that large learning rates cannot blow the
weights up.

- :func:`l1_penalty` and :func:`l2_penalty`: :math:`\\sum |w|` and :math:`\\sum w^2`, to add
  to a loss;
- :class:`L1`: a ``fit`` callback that applies the L1 penalty as a proximal step
  (soft-thresholding after each optimizer step), which gives exact zeros;
- :func:`max_norm_` and :class:`MaxNorm`: the max-norm projection, by hand or after each
  optimizer step of ``fit``.

"The weights" of a model are, by default, its parameters with two or more dimensions: the
weight matrices of ``nn.Linear`` and the filters of convolutions, not the biases nor the
scales and shifts of normalization layers, which are not penalized by custom.
"""
from __future__ import annotations

import numbers
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.callbacks import Callback, FitState
from coursekit.init import WEIGHTED_LAYERS
from coursekit.validate import non_negative_number, positive_number

__all__ = ["l1_penalty", "l2_penalty", "L1", "max_norm_", "MaxNorm"]


def _weights(parameters: nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors to penalize: a module's parameters with two or more dimensions, or the
    given tensors."""
    if isinstance(parameters, nn.Module):
        return [p for p in parameters.parameters() if p.dim() >= 2]
    if isinstance(parameters, torch.Tensor):
        return [parameters]
    return list(parameters)


def l1_penalty(parameters: nn.Module | Iterable[torch.Tensor]) -> torch.Tensor:
    r"""The L1 penalty :math:`\sum_j |w_j|` over the weights (the sum of their absolute values).

    Its gradient is :math:`\operatorname{sign}(w)` (0 at 0). Added to the loss,
    ``loss_fn=lambda out, y: F.cross_entropy(out, y) + 1e-4 * l1_penalty(model)``, it is the
    textbook L1 regularization; the optimizer then takes subgradient steps, which make small
    weights jump back and forth across zero rather than stop there (:class:`L1` gives exact
    zeros). Such a ``loss_fn`` is also used for the validation loss, which then includes the
    penalty.

    Args:
        parameters: a module (its parameters with two or more dimensions: weights, not biases
            or normalization parameters), or the tensors to penalize.

    Returns:
        a scalar tensor, differentiable with respect to the weights (0 when there are none).
    """
    weights = _weights(parameters)
    if not weights:
        return torch.zeros(())
    return sum(w.abs().sum() for w in weights)


def l2_penalty(parameters: nn.Module | Iterable[torch.Tensor]) -> torch.Tensor:
    r"""The squared L2 norm :math:`\sum_j w_j^2` of the weights, to compare with :func:`l1_penalty`.

    Adding :math:`\tfrac{\lambda}{2}` times it to the loss is ``torch.optim.SGD``'s
    ``weight_decay=λ`` (the gradient :math:`\lambda w`); with Adam the two differ, and
    ``torch.optim.AdamW`` decays the weights directly instead (Loshchilov & Hutter 2019).

    Args:
        parameters: as :func:`l1_penalty`.

    Returns:
        a scalar tensor (0 when there are no weights).
    """
    weights = _weights(parameters)
    if not weights:
        return torch.zeros(())
    return sum(w.pow(2).sum() for w in weights)


class L1(Callback):
    r"""L1 regularization for :func:`~coursekit.train.fit`, as a proximal step after each optimizer step.

    After every optimizer step each penalized weight is soft-thresholded with the step's
    learning rate :math:`\eta`:

    .. math::
        w \leftarrow \operatorname{sign}(w)\, \max(|w| - \eta \lambda,\ 0),

    the proximal operator of :math:`\eta \lambda \|w\|_1` (``F.softshrink``). With SGD this is
    the proximal gradient method (ISTA) on :math:`L(w) + \lambda \|w\|_1`, the same objective
    as adding the penalty to the loss; but a weight whose gradient stays smaller than
    :math:`\lambda` in absolute value lands on exactly zero and stays there. With Adam (or any adaptive
    optimizer) the shrinkage by :math:`\eta \lambda` is *decoupled* from the adaptive step, as
    AdamW's weight decay is: it is not the same as Adam on the penalized loss.

    Why not add :math:`\lambda \operatorname{sign}(w)` to the gradients? ``fit``'s callbacks run
    after the optimizer step (``on_batch_end``), never between the backward pass and the step;
    and subgradient steps leave the weights jittering around zero by about :math:`\eta\lambda`
    instead of at zero. For that textbook version add :func:`l1_penalty` to the loss.

    The learning rate of each parameter's group is the one the step used (read before the
    step; a per-step scheduler changes it afterwards). With ``amp="fp16"``, a step that the
    gradient scaler skips still shrinks the weights.

    Args:
        weight: :math:`\lambda \ge 0`, the strength of the penalty :math:`\lambda \|w\|_1`.
        parameters: a module, or the tensors to penalize; they must be trained by the
            optimizer. Default: the trained model's parameters with two or more dimensions
            (weights, not biases or normalization parameters).

    Raises:
        ValueError: ``weight`` is negative or not a number; at the start of training, a
            penalized tensor that the optimizer does not train.

    Example::

        >>> history = fit(model, train, val, optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        ...               callbacks=[L1(1e-3)])
        >>> zeros = sum(int((w == 0).sum()) for w in model.parameters() if w.dim() >= 2)
    """

    def __init__(self, weight: float, parameters: nn.Module | Iterable[torch.Tensor] | None = None):
        self.weight = non_negative_number(weight, "weight")
        self.parameters = None if parameters is None else _weights(parameters)
        self._penalized: list[tuple[torch.Tensor, int]] = []   # (weight tensor, its param group)
        self._lrs: list[float] = []                            # each group's learning rate of the next step

    def on_fit_start(self, state: FitState) -> None:
        weights = _weights(state.model) if self.parameters is None else self.parameters
        group_of = {id(p): i for i, group in enumerate(state.optimizer.param_groups) for p in group["params"]}
        for w in weights:
            if id(w) not in group_of:
                raise ValueError(f"L1 penalizes a tensor of shape {tuple(w.shape)} that the optimizer "
                                 f"does not train")
        self._penalized = [(w, group_of[id(w)]) for w in weights]
        self._read_lrs(state)

    def on_epoch_start(self, state: FitState) -> None:
        self._read_lrs(state)   # a per-epoch scheduler changed them at the end of the last epoch

    def on_batch_end(self, state: FitState) -> None:
        with torch.no_grad():
            for w, group in self._penalized:
                threshold = self._lrs[group] * self.weight
                if threshold > 0:
                    w.copy_(F.softshrink(w, threshold))
        self._read_lrs(state)   # a per-step scheduler ran before this callback

    def _read_lrs(self, state: FitState) -> None:
        self._lrs = [float(group["lr"]) for group in state.optimizer.param_groups]

    def __repr__(self) -> str:
        return f"L1(weight={self.weight})"


# --------------------------------------------------------------------------- max-norm

def _check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise ValueError(f"dim must be an integer, got {dim!r}")
    return int(dim)


def _layer_weights(modules: nn.Module | Iterable[nn.Module] | torch.Tensor) -> list[torch.Tensor]:
    """The weights of the ``nn.Linear`` and ``nn.ConvNd`` layers in ``modules`` (a tensor: itself)."""
    if isinstance(modules, torch.Tensor):
        return [modules]
    roots = [modules] if isinstance(modules, nn.Module) else list(modules)
    seen, weights = set(), []
    for root in roots:
        for layer in root.modules():
            if isinstance(layer, WEIGHTED_LAYERS) and id(layer.weight) not in seen:
                seen.add(id(layer.weight))
                weights.append(layer.weight)
    return weights


def _check_shapes(weights: list[torch.Tensor], dim: int) -> None:
    """``ValueError`` unless every weight has a dimension ``dim`` of units and one of inputs."""
    for weight in weights:
        if weight.dim() < 2:
            raise ValueError(f"max-norm needs a weight with a dimension of units and one of inputs, "
                             f"got shape {tuple(weight.shape)}")
        if not -weight.dim() <= dim < weight.dim():
            raise ValueError(f"dim ({dim}) is out of range for a weight of shape {tuple(weight.shape)}")


def _project_(weight: torch.Tensor, max_norm: float, dim: int) -> None:
    """Scale each slice ``weight.select(dim, i)`` whose 2-norm exceeds ``max_norm`` down to it."""
    others = [d for d in range(weight.dim()) if d != dim % weight.dim()]
    norms = torch.linalg.vector_norm(weight, dim=others, keepdim=True)   # (out, 1, ...) for dim=0
    weight.mul_((max_norm / norms).clamp(max=1))                         # 1 where the norm is <= max_norm


def max_norm_(module: nn.Module | Iterable[nn.Module] | torch.Tensor, max_norm: float = 3.0,
              dim: int = 0) -> nn.Module | Iterable[nn.Module] | torch.Tensor:
    r"""Project each unit's incoming weight vector into the ball of radius ``max_norm``, in place.

    For every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` layer in ``module``, each slice
    :math:`w_i` of the weight along ``dim`` (a row of a linear layer's weight, a filter of a
    convolution's) becomes

    .. math::
        w_i \leftarrow w_i \cdot \min\!\Big(1, \frac{c}{\|w_i\|_2}\Big),

    so that :math:`\|w_i\|_2 \le c` (to rounding); a slice already inside the ball is left
    exactly as it was, and biases are not touched. This is Srivastava et al.'s (2014)
    max-norm constraint, :math:`c` typically 3 to 4.

    ``dim`` follows ``torch.renorm`` and ``torch.nn.utils.weight_norm``: it is the dimension
    that *indexes the units*; the norm is taken over all the others. PyTorch stores a linear
    layer's weight as (out, in) and a convolution's as (out, in, kernel...), so ``dim=0`` is
    one norm per output unit or filter. Keras's ``MaxNorm(max_value=2, axis=0)`` constraint
    names the *reduced* axis instead, on a ``Dense`` kernel stored as (in, out): its
    ``axis=0`` is also one norm per output unit, i.e. this ``dim=0``. (Keras's
    ``Conv2D`` needs ``axis=[0, 1, 2]`` for the same thing; here it is still ``dim=0``.)
    ``ConvTranspose`` layers, whose weight is (in, out, ...), are not projected.

    Args:
        module: a module (all its linear and convolution layers), a list of modules, or one
            weight tensor.
        max_norm: :math:`c > 0`. Default: 3.
        dim: the dimension of the units. Default: 0.

    Returns:
        ``module``.

    Raises:
        ValueError: ``max_norm`` not positive, ``dim`` not an integer or out of range.
    """
    positive_number(max_norm, "max_norm")
    dim = _check_dim(dim)
    weights = _layer_weights(module)
    _check_shapes(weights, dim)   # all of them before changing any
    with torch.no_grad():
        for weight in weights:
            _project_(weight, max_norm, dim)
    return module


class MaxNorm(Callback):
    r"""The max-norm constraint for :func:`~coursekit.train.fit`: :func:`max_norm_` after every optimizer step.

    Args:
        max_norm: :math:`c > 0`, the largest 2-norm of a unit's incoming weights. Default: 3.
        dim: the dimension of the units in the weights (see :func:`max_norm_`). Default: 0.
        modules: the layers to constrain (e.g. the hidden layers only). Default: every
            ``nn.Linear`` and ``nn.Conv1d/2d/3d`` layer of the trained model.

    Raises:
        ValueError: ``max_norm`` not positive, ``dim`` not an integer; at the start of
            training, ``dim`` out of range for a weight.

    Example::

        >>> history = fit(model, train, val, callbacks=[MaxNorm(3.0)])   # with dropout, say
    """

    def __init__(self, max_norm: float = 3.0, dim: int = 0,
                 modules: nn.Module | Iterable[nn.Module] | None = None):
        self.max_norm = positive_number(max_norm, "max_norm")
        self.dim = _check_dim(dim)
        self.modules = None if modules is None else (
            modules if isinstance(modules, nn.Module) else list(modules))
        self._weights: list[torch.Tensor] = []

    def on_fit_start(self, state: FitState) -> None:
        self._weights = _layer_weights(state.model if self.modules is None else self.modules)
        _check_shapes(self._weights, self.dim)

    def on_batch_end(self, state: FitState) -> None:
        with torch.no_grad():
            for weight in self._weights:
                _project_(weight, self.max_norm, self.dim)

    def __repr__(self) -> str:
        return f"MaxNorm(max_norm={self.max_norm}, dim={self.dim})"
