r"""Weight initialization: fans, gains, Xavier/Glorot, He/Kaiming, and LSUV.

The functions have the signatures and the semantics of :mod:`torch.nn.init`: they fill a
tensor **in place**, without recording gradients, and return it; given the same
``generator`` they draw the same numbers as ``torch.nn.init``. They are written out so a
reader can follow each formula. The idea behind all of them: pick the variance of the
weights so that the variance of the signal neither shrinks nor grows from layer to layer.

For a layer :math:`y = Wx` with :math:`n_\text{in}` inputs, independent zero-mean weights
and inputs, :math:`\operatorname{Var}[y_i] = n_\text{in}\operatorname{Var}[W]\operatorname{Var}[x]`:

- Xavier/Glorot (2010) keeps the forward variance (:math:`n_\text{in}\operatorname{Var}[W] = 1`)
  and the backward one (:math:`n_\text{out}\operatorname{Var}[W] = 1`) in balance with
  :math:`\operatorname{Var}[W] = 2 / (n_\text{in} + n_\text{out})`;
- He/Kaiming (2015) accounts for a ReLU halving the second moment:
  :math:`\operatorname{Var}[W] = 2 / n_\text{fan}`;
- a uniform distribution :math:`U[-b, b]` has variance :math:`b^2/3`, so the bound of
  standard deviation :math:`\sigma` is :math:`b = \sqrt{3}\,\sigma`;
- LSUV (Mishkin & Matas 2016) skips the algebra: orthonormal weights, then each layer is
  rescaled until its output has unit variance on a real batch.

Example::

    >>> w = torch.empty(256, 128)
    >>> kaiming_normal_(w, nonlinearity="relu")    # std sqrt(2 / 128)
    >>> model = lsuv_(model, X_train[:512])         # the whole network, on a batch
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from coursekit.validate import positive_int, positive_number

__all__ = ["calculate_fan_in_and_fan_out", "calculate_gain", "xavier_uniform_", "xavier_normal_",
           "kaiming_uniform_", "kaiming_normal_", "lsuv_", "WEIGHTED_LAYERS"]

_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
           "conv_transpose3d")
_NONLINEARITIES = (*_LINEAR, "sigmoid", "tanh", "relu", "leaky_relu", "selu")
_MODES = ("fan_in", "fan_out")


def calculate_fan_in_and_fan_out(tensor: torch.Tensor) -> tuple[int, int]:
    r"""The number of inputs and outputs that each weight of ``tensor`` connects.

    A weight of shape :math:`(\text{out}, \text{in}, k_1, k_2, \dots)` (``nn.Linear``:
    ``(out_features, in_features)``; ``nn.Conv2d``: ``(out_channels, in_channels / groups, kH, kW)``)
    has receptive field :math:`r = k_1 k_2 \cdots` (1 for a linear layer), and

    .. math::
        \text{fan\_in} = \text{in} \cdot r, \qquad \text{fan\_out} = \text{out} \cdot r .

    Raises:
        ValueError: ``tensor`` has fewer than 2 dimensions (a bias has no fans).
    """
    if tensor.dim() < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dimensions "
                         f"(out, in, *kernel), got shape {tuple(tensor.shape)}")
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    r"""The factor by which to multiply the standard deviation for a nonlinearity.

    ================== =====================================================
    nonlinearity       gain
    ================== =====================================================
    linear, conv*      :math:`1`
    sigmoid            :math:`1`
    tanh               :math:`5/3`
    relu               :math:`\sqrt{2}`
    leaky_relu         :math:`\sqrt{2 / (1 + \text{negative\_slope}^2)}` (default slope 0.01)
    selu               :math:`3/4`
    ================== =====================================================

    Args:
        nonlinearity: the name of the function, as in ``torch.nn.functional``.
        param: the negative slope of ``leaky_relu``. Default: ``None`` (0.01).

    Raises:
        ValueError: an unknown nonlinearity, or a slope that is not a number.
    """
    if nonlinearity in _LINEAR or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}; use one of {', '.join(_NONLINEARITIES)}")


def _fan(tensor: torch.Tensor, mode: str) -> int:
    if mode not in _MODES:
        raise ValueError(f"mode {mode!r} not supported; use one of {_MODES}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _uniform_(tensor: torch.Tensor, bound: float, generator) -> torch.Tensor:
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)


def _normal_(tensor: torch.Tensor, std: float, generator) -> torch.Tensor:
    with torch.no_grad():
        return tensor.normal_(0.0, std, generator=generator)


def xavier_uniform_(tensor: torch.Tensor, gain: float = 1.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Fill ``tensor`` from :math:`U[-b, b]` with Glorot & Bengio's (2010) variance.

    .. math::
        \sigma = \text{gain} \cdot \sqrt{\frac{2}{\text{fan\_in} + \text{fan\_out}}}, \qquad
        b = \sqrt{3}\,\sigma .

    Args:
        tensor: the weight, with at least 2 dimensions; filled in place and returned.
        gain: a scaling factor (see :func:`calculate_gain`). Default: 1.
        generator: the random number generator. Default: torch's global one.
    """
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return _uniform_(tensor, math.sqrt(3.0) * std, generator)


def xavier_normal_(tensor: torch.Tensor, gain: float = 1.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Fill ``tensor`` from :math:`\mathcal N(0, \sigma^2)`, with
    :math:`\sigma = \text{gain} \cdot \sqrt{2 / (\text{fan\_in} + \text{fan\_out})}` (Glorot & Bengio 2010).

    Args: as :func:`xavier_uniform_`.
    """
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return _normal_(tensor, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def _kaiming_std(tensor: torch.Tensor, a: float, mode: str, nonlinearity: str) -> float | None:
    """The He standard deviation, or None for a tensor without elements (nothing to fill)."""
    if tensor.numel() == 0:
        return None
    fan = _fan(tensor, mode)
    gain = calculate_gain(nonlinearity, a)
    return gain / math.sqrt(fan)


def kaiming_uniform_(tensor: torch.Tensor, a: float = 0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Fill ``tensor`` from :math:`U[-b, b]` with He et al.'s (2015) variance.

    .. math::
        \sigma = \frac{\text{gain}}{\sqrt{\text{fan\_mode}}}, \qquad b = \sqrt{3}\,\sigma,

    where gain is :func:`calculate_gain` ``(nonlinearity, a)``: :math:`\sqrt 2` for a ReLU
    (which zeroes half of its inputs and so halves the second moment).

    Args:
        tensor: the weight, with at least 2 dimensions; filled in place and returned.
        a: the negative slope of the rectifier after this layer (``leaky_relu`` only). Default: 0.
        mode: ``"fan_in"`` keeps the variance of the activations in the forward pass,
            ``"fan_out"`` that of the gradients in the backward pass. Default: ``"fan_in"``.
        nonlinearity: the function after this layer. Default: ``"leaky_relu"`` (with ``a=0``,
            the same as ``"relu"``).
        generator: the random number generator. Default: torch's global one.

    Raises:
        ValueError: a ``mode`` other than ``"fan_in"`` / ``"fan_out"``, an unknown
            nonlinearity, or a tensor with fewer than 2 dimensions.
    """
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    return tensor if std is None else _uniform_(tensor, math.sqrt(3.0) * std, generator)


def kaiming_normal_(tensor: torch.Tensor, a: float = 0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu",
                    generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Fill ``tensor`` from :math:`\mathcal N(0, \sigma^2)`, with
    :math:`\sigma = \text{gain} / \sqrt{\text{fan\_mode}}` (He et al. 2015).

    Args and errors: as :func:`kaiming_uniform_`.
    """
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    return tensor if std is None else _normal_(tensor, std, generator)


# The layers whose weight is (out, in, ...) with one row or filter per unit: what LSUV initializes,
# what coursekit.smoothness measures and what the max-norm constraint projects.
WEIGHTED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def lsuv_(model: nn.Module, batch: torch.Tensor, *, target_std: float = 1.0, tol: float = 0.05,
          max_iter: int = 10, layers: Iterable[nn.Module] | None = None,
          generator: torch.Generator | None = None) -> nn.Module:
    r"""Layer-sequential unit-variance initialization (Mishkin & Matas 2016), in place.

    1. Every weight of the chosen layers is filled with a (semi-)orthogonal matrix
       (:func:`torch.nn.init.orthogonal_`, Saxe et al. 2014) and its bias with zeros.
    2. Layer by layer, in the order of the forward pass, the output :math:`a` of the layer
       on ``batch`` is measured and the weight divided by :math:`\operatorname{std}(a) / \text{target\_std}`,
       until :math:`|\operatorname{std}(a) - \text{target\_std}| \le \text{tol}` or after
       ``max_iter`` rescalings. Earlier layers are fixed by then, so each layer sees the
       signal that it will see at the start of training.

    The model keeps its training/eval mode; no gradients are recorded.

    Args:
        model: the network.
        batch: a batch of inputs (a few hundred examples are plenty).
        target_std: the standard deviation wanted at every layer's output. Default: 1.
        tol: the accepted deviation from ``target_std``. Default: 0.05.
        max_iter: the most rescalings per layer. Default: 10.
        layers: the layers to initialize; default every ``Linear`` and ``Conv{1,2,3}d``.
        generator: the random number generator of the orthogonal matrices. Default: torch's.

    Returns:
        ``model``.

    Raises:
        ValueError: a non-positive ``target_std``, ``tol`` or ``max_iter``, or a model with
        no layer to initialize.
    """
    positive_number(target_std, "target_std")
    positive_number(tol, "tol")
    positive_int(max_iter, "max_iter")
    layers = [m for m in model.modules() if isinstance(m, WEIGHTED_LAYERS)] if layers is None else list(layers)
    if not layers:
        raise ValueError(f"lsuv_ found no Linear or Conv layer in {type(model).__name__} to initialize")
    with torch.no_grad():
        for layer in layers:
            nn.init.orthogonal_(layer.weight, generator=generator)
            if getattr(layer, "bias", None) is not None:
                layer.bias.zero_()
        for layer in layers:
            output = {}
            handle = layer.register_forward_hook(lambda m, i, out: output.__setitem__("a", out))
            try:
                for _ in range(max_iter):
                    model(batch)
                    if "a" not in output:
                        raise ValueError(f"lsuv_: the layer {layer} is not used in model(batch)")
                    std = output["a"].float().std(correction=0).item()
                    if abs(std - target_std) <= tol or std == 0:
                        break
                    layer.weight.mul_(target_std / std)
            finally:
                handle.remove()
    return model
