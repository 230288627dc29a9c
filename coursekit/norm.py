"""The normalization layers in plain tensor ops, written so that a reader can follow every step.

- :func:`batch_norm` (Ioffe & Szegedy 2015, Algorithm 1), with exactly the semantics of
  :func:`torch.nn.functional.batch_norm`, its hand-derived backward pass
  :func:`batch_norm_backward`, and :class:`BatchRenorm` (Ioffe 2017);
- the rest of the family, each with :mod:`torch.nn.functional`'s semantics:
  :func:`layer_norm` (Ba et al. 2016), :func:`instance_norm` (Ulyanov et al. 2016),
  :func:`group_norm` (Wu & He 2018), and :func:`weight_norm` (Salimans & Kingma 2016).

They differ only in which elements share a mean and a variance. For an ``(N, C, H, W)``
input: batch norm over ``(N, H, W)`` per channel; layer norm over ``(C, H, W)`` per
example; instance norm over ``(H, W)`` per example and channel; group norm over
``(C/G, H, W)`` per example and group of channels. All are tested against PyTorch in
float64 and float32, forward and backward, also on the samples of PyTorch's own operator
tests (its OpInfo database), empty batches included.

Example::

    >>> running_mean, running_var = torch.zeros(C), torch.ones(C)
    >>> y = batch_norm(x, running_mean, running_var, gamma, beta, training=True)   # updates the running stats
    >>> y_eval = batch_norm(x, running_mean, running_var, gamma, beta)              # uses them
"""
from __future__ import annotations

import math

import torch
from torch import nn

from coursekit.validate import positive_int

__all__ = ["batch_norm", "batch_norm_backward", "BatchRenorm", "layer_norm", "instance_norm",
           "group_norm", "weight_norm",
           # per-channel shape helpers, shared with the grading checks
           "reduce_dims", "channel_shape", "affine_per_channel"]


def reduce_dims(x: torch.Tensor) -> list[int]:
    """Every dimension but the channels (dim 1): the batch and any spatial ones."""
    return [0, *range(2, x.dim())]


def channel_shape(x: torch.Tensor) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector (C,) against x: (1, C, 1, ..., 1)."""
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


def _check_input(x: torch.Tensor, **per_channel: torch.Tensor | None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"input must have shape (N, C) or (N, C, *), got shape {tuple(x.shape)}")
    C = x.shape[1]
    for name, t in per_channel.items():
        if t is not None and tuple(t.shape) != (C,):
            raise ValueError(f"{name} must have shape (C,) = ({C},) for input of shape "
                             f"{tuple(x.shape)}, got shape {tuple(t.shape)}")


def affine_per_channel(y: torch.Tensor, weight, bias) -> torch.Tensor:
    """y * gamma + beta with per-channel gamma, beta of shape (C,); None means no scale/shift."""
    shape = channel_shape(y)
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    return y


def batch_norm(input: torch.Tensor, running_mean: torch.Tensor | None,
               running_var: torch.Tensor | None, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> torch.Tensor:
    r"""Batch normalization, as :func:`torch.nn.functional.batch_norm`.

    .. math::
        y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \cdot \gamma + \beta

    per channel :math:`c` (dimension 1). In training mode :math:`\mu` and :math:`\sigma^2`
    are the mean and the *biased* variance of the batch over every dimension but the
    channels (:math:`N` for ``(N, C)``, :math:`N, H, W` for images), and, if given, the
    running statistics are updated in place with PyTorch's convention:

    .. math::
        \text{running} \leftarrow (1 - \text{momentum}) \cdot \text{running} + \text{momentum} \cdot \text{batch},

    where the batch variance stored in ``running_var`` is the *unbiased* one
    (:math:`\frac{m}{m-1}\sigma^2`, with :math:`m` values per channel). In evaluation mode
    :math:`\mu, \sigma^2` are ``running_mean``, ``running_var``, and nothing is updated.

    Args:
        input: :math:`(N, C)` or :math:`(N, C, *)`.
        running_mean, running_var: :math:`(C,)`, or ``None`` (training mode only).
        weight: :math:`\gamma`, shape :math:`(C,)`; ``None`` means 1. Default: ``None``.
        bias: :math:`\beta`, shape :math:`(C,)`; ``None`` means 0. Default: ``None``.
        training: use batch statistics (and update the running ones). Default: ``False``.
        momentum: weight of the new batch in the running statistics. Default: 0.1.
        eps: added to the variance inside the square root. Default: 1e-5.

    Shape:
        - Output: same as ``input``. An empty input (no elements, e.g. :math:`N = 0`) gives
          an empty output and leaves the running statistics unchanged, as in PyTorch.

    Raises:
        ValueError: for a wrong shape, missing running statistics in evaluation mode, or a
            single value per channel in training mode (its variance is undefined).
    """
    if isinstance(input, torch.Tensor) and input.dim() < 2 and input.numel() == 0:
        return input.clone()         # PyTorch returns an empty 1-D input as it is (it has no channels)
    _check_input(input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    if input.numel() == 0:
        # An empty batch: nothing to normalize, and no statistics to learn from (the mean of
        # no values is undefined), so the running statistics stay as they are, in either mode.
        return affine_per_channel(input.clone(), weight, bias)
    dims, shape = reduce_dims(input), channel_shape(input)
    if training:
        m = input.numel() // input.shape[1]  # values per channel
        if m < 2:
            raise ValueError(f"expected more than 1 value per channel when training, got input "
                             f"of shape {tuple(input.shape)}")
        mean = input.mean(dim=dims)                                    # (C,)
        var = ((input - mean.view(shape)) ** 2).mean(dim=dims)         # biased, (C,)
        with torch.no_grad():
            if running_mean is not None:
                running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
            if running_var is not None:
                running_var.mul_(1 - momentum).add_(momentum * var.detach() * m / (m - 1))
    else:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean and running_var must be given in evaluation mode "
                             "(training=False)")
        mean, var = running_mean, running_var
    y = (input - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
    return affine_per_channel(y, weight, bias)


def batch_norm_backward(grad_output: torch.Tensor, input: torch.Tensor,
                        weight: torch.Tensor | None = None, eps: float = 1e-5):
    r"""Gradients of :func:`batch_norm` in training mode, derived by hand.

    With :math:`\hat x = (x - \mu)/\sqrt{\sigma^2 + \epsilon}` over the :math:`m` values of
    a channel and :math:`g = \partial L / \partial y`:

    .. math::
        \frac{\partial L}{\partial \beta} = \sum g, \qquad
        \frac{\partial L}{\partial \gamma} = \sum g\,\hat x, \qquad
        \frac{\partial L}{\partial x} = \frac{\gamma}{m\sqrt{\sigma^2+\epsilon}}
            \Big(m\,g - \sum g - \hat x \sum g\,\hat x\Big).

    The last two terms are the paths through :math:`\mu` and :math:`\sigma^2`, which both
    depend on every input of the channel.

    Args:
        grad_output: :math:`\partial L/\partial y`, the shape of ``input``.
        input: the input of the forward pass, :math:`(N, C)` or :math:`(N, C, *)`.
        weight: :math:`\gamma`, shape :math:`(C,)`, or ``None`` (no affine parameters).
        eps: as in the forward pass. Default: 1e-5.

    Returns:
        ``(grad_input, grad_weight, grad_bias)``; the last two are ``None`` when ``weight``
        is ``None``.
    """
    _check_input(input, weight=weight)
    if not isinstance(grad_output, torch.Tensor) or grad_output.shape != input.shape:
        got = tuple(grad_output.shape) if isinstance(grad_output, torch.Tensor) else type(grad_output).__name__
        raise ValueError(f"grad_output must have the shape of input {tuple(input.shape)}, got {got}")
    dims, shape = reduce_dims(input), channel_shape(input)
    m = input.numel() // input.shape[1]
    mean = input.mean(dim=dims, keepdim=True)
    inv_std = torch.rsqrt(((input - mean) ** 2).mean(dim=dims, keepdim=True) + eps)
    x_hat = (input - mean) * inv_std
    g = grad_output if weight is None else grad_output * weight.view(shape)   # dL/dx_hat
    grad_input = inv_std / m * (m * g - g.sum(dim=dims, keepdim=True)
                                - x_hat * (g * x_hat).sum(dim=dims, keepdim=True))
    if weight is None:
        return grad_input, None, None
    return grad_input, (grad_output * x_hat).sum(dim=dims), grad_output.sum(dim=dims)


class BatchRenorm(nn.Module):
    r"""Batch Renormalization (Ioffe 2017): batch normalization that stays close to the
    inference-time transform when batches are small or not i.i.d.

    In training, with the batch statistics :math:`\mu_B, \sigma_B` and the running ones
    :math:`\mu, \sigma` (:math:`\sigma = \sqrt{\text{running\_var} + \epsilon}`):

    .. math::
        r = \operatorname{clip}_{[1/r_{\max},\, r_{\max}]}\!\Big(\frac{\sigma_B}{\sigma}\Big), \quad
        d = \operatorname{clip}_{[-d_{\max},\, d_{\max}]}\!\Big(\frac{\mu_B - \mu}{\sigma}\Big), \quad
        y = \gamma\Big(\frac{x - \mu_B}{\sigma_B}\, r + d\Big) + \beta,

    with no gradient through :math:`r` and :math:`d`. With :math:`r = 1, d = 0` this is
    batch normalization; with unclipped :math:`r, d` it is exactly the inference transform
    :math:`(x - \mu)/\sigma`. In evaluation mode it uses the running statistics, like BN.

    Args:
        num_features: :math:`C`.
        momentum: for the running statistics (PyTorch's convention). Default: 0.01.
        eps: added to the variances. Default: 1e-5.
        r_max, d_max: the clipping bounds (1 and 0 give batch normalization). Default: 3, 5.

    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, *)`; output: the same.
    """

    def __init__(self, num_features: int, momentum: float = 0.01, eps: float = 1e-5,
                 r_max: float = 3.0, d_max: float = 5.0):
        super().__init__()
        if r_max < 1 or d_max < 0:
            raise ValueError(f"need r_max >= 1 and d_max >= 0, got r_max={r_max}, d_max={d_max}")
        self.momentum, self.eps, self.r_max, self.d_max = momentum, eps, r_max, d_max
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, running_mean=self.running_mean)
        if not self.training:
            return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                              training=False, eps=self.eps)
        dims, shape = reduce_dims(x), channel_shape(x)
        m = x.numel() // x.shape[1]
        if m < 2:
            raise ValueError(f"expected more than 1 value per channel when training, got input "
                             f"of shape {tuple(x.shape)}")
        mean_b = x.mean(dim=dims)                                       # (C,)
        var_b = ((x - mean_b.view(shape)) ** 2).mean(dim=dims)          # biased, (C,)
        std_b = torch.sqrt(var_b + self.eps)
        with torch.no_grad():
            std = torch.sqrt(self.running_var + self.eps)
            r = (std_b / std).clamp(1 / self.r_max, self.r_max)
            d = ((mean_b - self.running_mean) / std).clamp(-self.d_max, self.d_max)
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean_b)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var_b * m / (m - 1))
        x_hat = (x - mean_b.view(shape)) / std_b.view(shape) * r.view(shape) + d.view(shape)
        return x_hat * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[0]}, momentum={self.momentum}, eps={self.eps}, "
                f"r_max={self.r_max}, d_max={self.d_max}")


# --- the rest of the family -------------------------------------------------------------------

def _normalize(x: torch.Tensor, dims: list[int], eps: float) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps), with the mean and the biased variance over ``dims``."""
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def _check_spatial(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 3:
        raise ValueError(f"{name} needs an input of shape (N, C, *) with at least one position "
                         f"dimension, e.g. (N, C, L) or (N, C, H, W); got shape {tuple(x.shape)}")


def layer_norm(input: torch.Tensor, normalized_shape, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    r"""Layer normalization, as :func:`torch.nn.functional.layer_norm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    with the mean and the biased variance over the last ``len(normalized_shape)``
    dimensions, separately for every leading index (every example, every position of a
    sequence). The same computation at training and at test time; no running statistics.

    Args:
        input: :math:`(*, \text{normalized\_shape})`.
        normalized_shape: the trailing shape to normalize over, an int or a sequence of ints.
        weight, bias: :math:`\gamma, \beta` of shape ``normalized_shape`` (elementwise), or ``None``.
        eps: added to the variance. Default: 1e-5.

    Shape:
        - Output: same as ``input``; an empty batch gives an empty output.
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or k > input.dim() or tuple(input.shape[input.dim() - k:]) != shape:
        raise ValueError(f"normalized_shape {list(shape)} must be the trailing shape of the input; "
                         f"got input of shape {tuple(input.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape normalized_shape {shape}, got {tuple(t.shape)}")
    y = _normalize(input, list(range(input.dim() - k, input.dim())), eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def instance_norm(input: torch.Tensor, running_mean: torch.Tensor | None = None,
                  running_var: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    r"""Instance normalization, as :func:`torch.nn.functional.instance_norm`: each channel of
    each example is normalized over its positions.

    .. math::
        y_{n c} = \frac{x_{n c} - \mathrm{E}[x_{n c}]}{\sqrt{\mathrm{Var}[x_{n c}] + \epsilon}}
            \cdot \gamma_c + \beta_c

    with the mean and the *biased* variance of channel :math:`c` of example :math:`n` over its
    :math:`P` positions (:math:`L`, or :math:`H \cdot W`, ...). If running statistics are
    given, they are updated in place like batch norm's, from the per-instance statistics
    averaged over the batch (the variance being the *unbiased* one, :math:`\frac{P}{P-1}\sigma^2`):

    .. math::
        \text{running} \leftarrow (1 - \text{momentum}) \cdot \text{running}
            + \text{momentum} \cdot \frac{1}{N} \sum_n \text{statistic}_{n c}.

    With ``use_input_stats=False``, :math:`\mathrm{E}[x_{n c}]` and :math:`\mathrm{Var}[x_{n c}]`
    are ``running_mean[c]`` and ``running_var[c]`` instead (batch norm in evaluation mode),
    and nothing is updated.

    Args:
        input: :math:`(N, C, *)` with at least one position dimension; :math:`(N, C)` too when
            ``use_input_stats=False``.
        running_mean, running_var: :math:`(C,)`, both or neither. Default: ``None``.
        weight, bias: :math:`\gamma, \beta` of shape :math:`(C,)`, or ``None``. Default: ``None``.
        use_input_stats: normalize with the statistics of each instance (and update the running
            ones), or with the running ones. Default: ``True``.
        momentum: weight of the new statistics in the running ones. Default: 0.1.
        eps: added to the variance. Default: 1e-5.

    Shape:
        - Output: same as ``input``. An empty batch (:math:`N = 0`) gives an empty output; as in
          PyTorch, it sets the running statistics to NaN (the average over no instances).

    Raises:
        ValueError: for a wrong shape, a single position per channel with
            ``use_input_stats=True`` (its variance is undefined), only one of the running
            statistics, or none with ``use_input_stats=False``.
    """
    _check_input(input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be given or both be None, got "
                         f"running_mean={'None' if running_mean is None else 'a tensor'} and "
                         f"running_var={'None' if running_var is None else 'a tensor'}")
    shape = channel_shape(input)
    if not use_input_stats:
        if running_mean is None:
            raise ValueError("running_mean and running_var must be given when use_input_stats=False")
        y = (input - running_mean.view(shape)) / torch.sqrt(running_var.view(shape) + eps)
        return affine_per_channel(y, weight, bias)

    _check_spatial(input, "instance_norm")
    N, P = input.shape[0], math.prod(input.shape[2:])   # P positions per channel
    if P == 1:
        raise ValueError(f"instance_norm needs more than 1 position per channel, got input of "
                         f"shape {tuple(input.shape)}")
    dims = list(range(2, input.dim()))
    mean = input.mean(dim=dims, keepdim=True)                     # (N, C, 1, ..., 1)
    var = ((input - mean) ** 2).mean(dim=dims, keepdim=True)      # biased, (N, C, 1, ..., 1)
    # PyTorch's update: an input with no positions changes nothing, while an empty batch
    # (N = 0) stores the average over no instances, NaN.
    if running_mean is not None and (P > 0 or N == 0):
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(momentum * mean.mean(dim=0).flatten())
            unbiased = var * P / (P - 1)                          # (N, C, 1, ..., 1)
            running_var.mul_(1 - momentum).add_(momentum * unbiased.mean(dim=0).flatten())
    y = (input - mean) / torch.sqrt(var + eps)
    return affine_per_channel(y, weight, bias)


def group_norm(input: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    r"""Group normalization, as :func:`torch.nn.functional.group_norm`: the channels are split
    into ``num_groups`` consecutive groups, and each group of each example is normalized
    over its channels and positions; then a per-*channel* affine transform.

    ``num_groups=1`` is layer norm over :math:`(C, *)`; ``num_groups=C`` is instance norm.

    Args:
        input: :math:`(N, C, *)`.
        num_groups: :math:`G`, which must divide :math:`C`.
        weight, bias: :math:`\gamma, \beta` of shape :math:`(C,)`, or ``None``.
        eps: added to the variance. Default: 1e-5.

    Shape:
        - Output: same as ``input``; an empty batch (:math:`N = 0`) gives an empty output.

    Raises:
        ValueError: ``num_channels (10) must be divisible by num_groups (3)``, and for shapes.
    """
    _check_input(input, weight=weight, bias=bias)
    N, C = input.shape[:2]
    positive_int(num_groups, "num_groups")
    if C % num_groups:
        raise ValueError(f"num_channels ({C}) must be divisible by num_groups ({num_groups})")
    P = math.prod(input.shape[2:])            # positions per channel (1 for an (N, C) input)
    x = input.reshape(N, num_groups, C // num_groups * P)   # (N, G, C//G * P): groups are consecutive channels
    y = _normalize(x, [2], eps).view(input.shape)
    return affine_per_channel(y, weight, bias)


def weight_norm(v: torch.Tensor, g: torch.Tensor, dim: int | None = 0) -> torch.Tensor:
    r"""The weight of weight normalization: :math:`w = g \, v / \lVert v \rVert`.

    As in :func:`torch.nn.utils.parametrizations.weight_norm`, the norm is taken over every
    dimension except ``dim`` (for a ``Linear`` weight of shape ``(out, in)`` and ``dim=0``:
    one norm per output unit), or over the whole tensor when ``dim`` is ``None`` (or ``-1``,
    as in PyTorch). The
    direction :math:`v/\lVert v\rVert` and the length :math:`g` become separate parameters.

    Args:
        v: the direction parameter, any shape.
        g: the length: shape ``(v.shape[dim],)``, or ``v``'s number of dimensions with size 1
            everywhere but ``dim`` (PyTorch's layout), or a scalar when ``dim`` is ``None``.
        dim: the dimension that keeps one length per index; ``None`` or ``-1``: one length
            for the whole tensor. Default: 0.
    """
    if dim is None or dim == -1:  # -1 is PyTorch's (legacy) spelling of "the whole tensor"
        return g * v / v.norm()
    if not -v.dim() <= dim < v.dim():
        raise ValueError(f"dim must be in [{-v.dim()}, {v.dim() - 1}] for v of shape "
                         f"{tuple(v.shape)}, got {dim}")
    dim = dim % v.dim()
    keep = [1] * v.dim()
    keep[dim] = v.shape[dim]
    if g.numel() != v.shape[dim]:
        raise ValueError(f"g must have {v.shape[dim]} elements (one per index of dim {dim} of v, "
                         f"shape {tuple(v.shape)}), got shape {tuple(g.shape)}")
    norm = v.norm(dim=[d for d in range(v.dim()) if d != dim], keepdim=True)   # (1, .., v.shape[dim], .., 1)
    return g.reshape(keep) * v / norm
