"""Noise in training only: inverted dropout, and Gaussian noise on the inputs.

Dropout (Srivastava et al. 2014) multiplies every unit by an independent Bernoulli mask
during training, so that no unit can rely on particular others being present. The paper
writes :math:`p` for the probability of *keeping* a unit and scales the weights by
:math:`p` at test time; PyTorch (and this module) writes ``p`` for the probability of
*dropping* one and scales the kept units by :math:`1/(1-p)` during training instead
("inverted" dropout), so that the network is used unchanged at test time. Both keep the
expected value of every unit the same in training and at test:
:math:`\\mathbb E[m_i x_i / (1-p)] = x_i` for :math:`m_i \\sim \\text{Bernoulli}(1-p)`.
"""
from __future__ import annotations

import torch
from torch import nn

from coursekit.validate import non_negative_number, probability

__all__ = ["dropout", "Dropout", "add_noise",
           "draw"]   # seeded sampling on the generator's device, shared with augment


def draw(sample, input: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``sample(device)`` drawn with ``generator`` (on the generator's device), returned on
    the input's device: a CPU generator also drives noise for a tensor on a GPU."""
    device = input.device if generator is None else generator.device
    return sample(device).to(input.device)


def dropout(input: torch.Tensor, p: float = 0.5, training: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Inverted dropout: zero each element with probability ``p``, scale the rest by :math:`1/(1-p)`.

    .. math::
        y = \frac{m \odot x}{1 - p}, \qquad m_i \sim \text{Bernoulli}(1 - p)\ \text{independently},

    in training; :math:`y = x` when ``training`` is false. The mask is a constant for
    autograd, so the gradient is :math:`m / (1 - p)`: exactly zero where the output was
    dropped. ``p = 1`` drops everything (the output is zero, not NaN).

    Args:
        input: a floating-point tensor of any shape.
        p: the probability of dropping an element (PyTorch's convention; the paper's
            retention probability is :math:`1 - p`). Default: 0.5.
        training: apply dropout; ``False`` returns ``input`` itself. Default: ``True``.
        generator: the random number generator of the mask. Default: torch's global one.

    Shape:
        the output has the shape, dtype and device of ``input``.

    Raises:
        ValueError: ``p`` outside :math:`[0, 1]`.
        TypeError: ``input`` is not a floating-point tensor.
    """
    p = float(probability(p, "dropout probability p"))
    if not (isinstance(input, torch.Tensor) and input.is_floating_point()):
        raise TypeError(f"dropout needs a floating-point tensor, got {type(input).__name__}"
                        f"{' of dtype ' + str(input.dtype) if isinstance(input, torch.Tensor) else ''}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * torch.zeros_like(input)
    keep = draw(lambda device: torch.rand(input.shape, generator=generator, device=device,
                                          dtype=input.dtype), input, generator) >= p
    return input * keep / (1 - p)


class Dropout(nn.Module):
    r"""The module of :func:`dropout`: active in training mode, the identity in eval mode.

    Args:
        p: the probability of dropping an element. Default: 0.5.
        generator: the random number generator of the masks. Default: torch's global one.

    Shape:
        - Input: :math:`(*)`, any shape.
        - Output: :math:`(*)`, the same shape.
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        super().__init__()
        self.p = float(probability(p, "dropout probability p"))
        self.generator = generator

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout(input, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Gaussian noise injection: :math:`x + \sigma \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`.

    For small :math:`\sigma`, training on noisy inputs is equivalent to a penalty on the
    network's sensitivity to its input (Tikhonov regularization; Bishop 1995).

    Args:
        x: a floating-point tensor.
        std: the standard deviation :math:`\sigma \ge 0` of the noise.
        generator: the random number generator. Default: torch's global one.

    Raises:
        ValueError: a negative ``std``.
    """
    non_negative_number(std, "std", what=">= 0")
    noise = draw(lambda device: torch.randn(x.shape, generator=generator, device=device,
                                            dtype=x.dtype), x, generator)
    return x + std * noise
