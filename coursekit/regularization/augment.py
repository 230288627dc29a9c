"""Data augmentation and soft targets, for 1D signals such as MNIST-1D (and images, for cutout).

Each function takes a batch on any device and returns a new one; they plug into training
as ``fit(..., augment=lambda x, y: mixup(x, y, 10))``. What they do to the *label* is the
point: a shift keeps it (a shifted 3 is a 3), so does cutout (a 3 with a patch hidden is
still a 3), label smoothing softens it, mixup and cutmix
blend two examples and their labels in the same proportions (Zhang et al. 2018; Yun et
al. 2019). An augmentation that can change the class (rotating a 6 into a 9) must not be
used with the old label.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch
import torch.nn.functional as F

from coursekit.regularization.stochastic import draw
from coursekit.validate import positive_int, positive_number, probability

__all__ = ["random_shift", "cutout", "smooth_labels", "mixup", "cutmix"]


def _check_targets(y: torch.Tensor, num_classes: int) -> None:
    positive_int(num_classes, "num_classes")
    if y.dim() == 2:
        if y.shape[1] != num_classes:
            raise ValueError(f"soft targets must have shape (N, num_classes={num_classes}), "
                             f"got {tuple(y.shape)}")
        return
    if y.dim() != 1 or y.is_floating_point():
        raise ValueError(f"targets must be class indices of shape (N,) or soft targets (N, C), "
                         f"got a {y.dtype} tensor of shape {tuple(y.shape)}")
    # (values are not read here: that would make the host wait for the device every batch;
    # F.one_hot rejects an index >= num_classes)


def _soft(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Targets as probabilities ``(N, C)``: one-hot for class indices."""
    return y.to(dtype) if y.dim() == 2 else F.one_hot(y, num_classes).to(dtype)


def smooth_labels(target: torch.Tensor, num_classes: int, smoothing: float = 0.1,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    r"""Label smoothing (Szegedy et al. 2016): the targets :math:`(1-\varepsilon)\,\text{onehot}(y) + \varepsilon / C`.

    Training on them with ``F.cross_entropy`` is the same as
    ``F.cross_entropy(output, target, label_smoothing=smoothing)``.

    Args:
        target: class indices, shape :math:`(N,)`.
        num_classes: :math:`C`.
        smoothing: :math:`\varepsilon \in [0, 1]`. Default: 0.1.
        dtype: of the result. Default: torch's default dtype.

    Returns:
        soft targets of shape :math:`(N, C)`, each row summing to 1.
    """
    probability(smoothing, "smoothing", what="in [0, 1]")
    _check_targets(target, num_classes)
    onehot = _soft(target, num_classes, dtype or torch.get_default_dtype())
    return onehot * (1 - smoothing) + smoothing / num_classes


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """One draw of Beta(alpha, alpha), seeded from ``generator`` (torch has no seeded Beta)."""
    positive_number(alpha, "alpha")
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _partners(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A random permutation of the batch, on the batch's device."""
    return draw(lambda device: torch.randperm(len(x), generator=generator, device=device), x, generator)


def mixup(x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float = 0.2,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Mixup (Zhang et al. 2018): train on convex combinations of pairs of examples.

    With :math:`\lambda \sim \text{Beta}(\alpha, \alpha)` drawn once per batch and a random
    permutation :math:`\pi` of the batch,

    .. math::
        \tilde x = \lambda x + (1 - \lambda)\, x_\pi, \qquad
        \tilde y = \lambda\, \text{onehot}(y) + (1 - \lambda)\, \text{onehot}(y_\pi).

    Args:
        x: inputs, shape :math:`(N, *)`, floating point.
        y: class indices :math:`(N,)`, or soft targets :math:`(N, C)`.
        num_classes: :math:`C`.
        alpha: the Beta parameter; small values keep most pairs close to one of the two
            examples. Default: 0.2.
        generator: the random number generator. Default: torch's global one.

    Returns:
        ``(x_mixed, y_soft)``, with ``y_soft`` of shape :math:`(N, C)` and ``x``'s dtype.
    """
    _check_targets(y, num_classes)
    lam = _beta(alpha, generator)
    perm = _partners(x, generator)
    soft = _soft(y, num_classes, x.dtype)
    return lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]


def cutmix(x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float = 1.0,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""CutMix (Yun et al. 2019) for signals: paste a segment of another example.

    With :math:`\lambda \sim \text{Beta}(\alpha, \alpha)` and a random permutation :math:`\pi`
    of the batch, a contiguous segment of the last dimension of length
    :math:`\ell = \operatorname{round}((1-\lambda) L)`, at a uniformly random position (the
    same for the whole batch), is replaced by the partner's. The labels are mixed by the
    fractions actually kept: :math:`\tilde y = (1 - \ell/L)\,\text{onehot}(y) + (\ell/L)\,\text{onehot}(y_\pi)`.

    Args:
        x: signals :math:`(N, L)` or :math:`(N, C, L)`.
        y: class indices :math:`(N,)`, or soft targets :math:`(N, C)`.
        num_classes, alpha, generator: as :func:`mixup` (default ``alpha`` 1: λ uniform).

    Returns:
        ``(x_mixed, y_soft)``.
    """
    _check_targets(y, num_classes)
    if x.dim() not in (2, 3):
        raise ValueError(f"cutmix expects signals of shape (N, L) or (N, C, L), got {tuple(x.shape)}")
    length = x.shape[-1]
    cut = round((1 - _beta(alpha, generator)) * length)
    start = int(torch.randint(0, length - cut + 1, (), generator=generator))
    perm = _partners(x, generator)
    mixed = x.clone()
    mixed[..., start:start + cut] = x[perm][..., start:start + cut]
    kept = 1 - cut / length
    soft = _soft(y, num_classes, x.dtype)
    return mixed, kept * soft + (1 - kept) * soft[perm]


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Shift each signal circularly along its last dimension by a random integer in
    :math:`[-\text{max\_shift}, \text{max\_shift}]`: a label-preserving augmentation for
    signals whose class does not depend on where the pattern sits (such as MNIST-1D).

    Args:
        x: signals :math:`(N, L)` or :math:`(N, C, L)` (every channel shifted alike).
        max_shift: the largest shift, :math:`0 \le \text{max\_shift} < L`.
        generator: the random number generator. Default: torch's global one.
    """
    if x.dim() not in (2, 3):
        raise ValueError(f"random_shift expects signals of shape (N, L) or (N, C, L), got {tuple(x.shape)}")
    length = x.shape[-1]
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or not 0 <= max_shift < length:
        raise ValueError(f"max_shift must be an integer in [0, {length}) for signals of length "
                         f"{length}, got {max_shift!r}")
    shifts = draw(lambda device: torch.randint(-max_shift, max_shift + 1, (len(x), 1),
                                               generator=generator, device=device), x, generator)
    index = (torch.arange(length, device=x.device) - shifts) % length   # (N, L): out[t] = x[t - shift]
    if x.dim() == 3:
        index = index.unsqueeze(1).expand(-1, x.shape[1], -1)          # (N, C, L)
    return x.gather(-1, index)


def cutout(x: torch.Tensor, size: int | tuple[int, int], generator: torch.Generator | None = None, *,
           p: float = 1.0) -> torch.Tensor:
    r"""Cutout (DeVries & Taylor 2017): hide a square patch of each image (a segment of each signal).

    For each sample a centre :math:`(c_h, c_w)` is drawn uniformly over the pixels, independently
    of the other samples, and the ``size`` :math:`\times` ``size`` square of rows
    :math:`c_h - \lfloor h/2 \rfloor, \dots, c_h - \lfloor h/2 \rfloor + h - 1` (columns likewise)
    is set to zero in every channel. The part of the square that falls outside the image is
    dropped, as the paper's reference code does (``np.clip`` of the square's corners at the
    image's border, in ``util/cutout.py`` of uoguelph-mlrg/Cutout): a square near the border
    hides less than :math:`h w` pixels, and the image's corners are hidden less often than its
    middle. Applying cutout to only some samples is ``p``. For signals the patch is a
    segment of ``size`` steps of the last dimension. Zero is the data's mean when the inputs
    are standardized (the reference code applies cutout after normalizing), so the patch carries no
    information. The label is kept: use it as ``fit(..., augment=lambda x, y: (cutout(x, 4), y))``.

    Peers differ in details. torchvision's ``RandomErasing`` (random erasing, Zhong et al. 2020) draws
    the rectangle's area and aspect ratio, keeps it inside the image, applies it with
    probability 0.5 and, on a batch, erases the same rectangle in every image. ffcv's
    ``Cutout`` keeps the square inside the image; Composer's ``CutOut`` cuts the same square
    from every image of a batch. Here each sample has its own.

    Args:
        x: images :math:`(N, C, H, W)`, or signals :math:`(N, C, L)` or :math:`(N, L)`. A 3-D
            tensor is read as signals: give one-channel images as :math:`(N, 1, H, W)`.
        size: the side of the square in pixels, or a pair ``(h, w)`` for a rectangle (images
            only); for signals the length of the segment. ``0`` changes nothing; a patch
            larger than the image hides all of the image it covers.
        generator: the random number generator. Default: torch's global one.
        p: the probability that a sample gets a patch, drawn per sample. Default: 1 (every
            sample, as in the paper).

    Returns:
        a new tensor with ``x``'s shape, dtype and device; ``x`` itself is left unchanged.

    Raises:
        ValueError: ``x`` has not 2, 3 or 4 dimensions; ``size`` is negative, not an integer,
            or a pair for signals; ``p`` is outside :math:`[0, 1]`.
    """
    if x.dim() not in (2, 3, 4):
        raise ValueError(f"cutout expects images (N, C, H, W) or signals (N, C, L) or (N, L), "
                         f"got shape {tuple(x.shape)}")
    extent = tuple(x.shape[2:]) if x.dim() == 4 else (x.shape[-1],)   # (H, W) or (L,)
    sides = _patch_sides(size, len(extent))
    probability(p, "p")
    n = len(x)
    if n == 0 or 0 in sides or 0 in extent or p == 0:
        return x.clone()
    hidden = _inside_patch(sides[0], extent[0], x, generator)        # (N, H) or (N, L)
    if len(extent) == 2:
        columns = _inside_patch(sides[1], extent[1], x, generator)  # (N, W)
        hidden = hidden[:, :, None] & columns[:, None, :]           # (N, H, W)
    if p < 1:
        chosen = draw(lambda device: torch.rand(n, generator=generator, device=device), x, generator) < p
        hidden = hidden & chosen.view(n, *[1] * (hidden.dim() - 1))
    if x.dim() > 2:
        hidden = hidden.unsqueeze(1)                                # the same patch in every channel
    return x.masked_fill(hidden, 0)


def _patch_sides(size, dims: int) -> tuple[int, ...]:
    """``size`` as one non-negative integer per spatial dimension, or ``ValueError``."""
    sides = tuple(size) if isinstance(size, (tuple, list)) else (size,) * dims
    if len(sides) != dims or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0
                                     for s in sides):
        what = "an integer >= 0, or a pair (h, w) of them for images" if dims == 2 else \
            "an integer >= 0 (a segment length, for signals)"
        raise ValueError(f"size must be {what}, got {size!r}")
    return tuple(int(s) for s in sides)


def _inside_patch(side: int, length: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``(N, length)`` booleans: which positions of one axis each sample's patch covers, around
    a centre drawn uniformly from ``0, ..., length - 1``."""
    centre = draw(lambda device: torch.randint(0, length, (len(x), 1), generator=generator, device=device),
                  x, generator)                                     # (N, 1)
    start = centre - side // 2
    position = torch.arange(length, device=x.device)                # (length,)
    return (position >= start) & (position < start + side)
