"""The networks of the chapters: multilayer perceptrons (MLPs), built by one function.

Every chapter trains MLPs on MNIST-1D (40 inputs, 10 classes); they differ in the widths,
the normalization layer, the activation, dropout and the initialization. :func:`mlp`
builds all of them, so a chapter states its architecture in one line::

    >>> model = mlp([40, 100, 100, 100], 10, norm=nn.BatchNorm1d)     # batch norm chapter
    >>> model = mlp([40, 256, 256], 10, dropout=0.5)                  # dropout

:func:`cnn` builds the small 2-D convolutional networks of the chapters that train on
scikit-learn's 8x8 digits (:func:`coursekit.data.load_digit_images`)::

    >>> model = cnn([16, 32], 10, norm=nn.BatchNorm2d)                  # BN per channel
    >>> model = cnn([16, 32], 10, norm=lambda c: nn.GroupNorm(4, c))    # GN, 4 groups

and :func:`init_linear_` re-initializes the linear layers of a built model::

    >>> init_linear_(mlp([40, 64, 64], 10, act=nn.Tanh), nn.init.xavier_normal_)

The random numbers of a build are drawn layer by layer, in the order of the forward pass
(PyTorch's default initialization when a layer is created, then ``init`` right away when
given), so the same seed builds the same network.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from coursekit.regularization.stochastic import Dropout
from coursekit.validate import positive_int, probability

__all__ = ["mlp", "cnn", "init_linear_"]


def _callable_or_none(value, name: str, what: str):
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be {what} or None, got {value!r}")
    return value


def _sizes(values, name: str, what: str) -> None:
    """``values`` is a non-empty sequence of positive integers; else a ValueError naming it."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must list {what}, got {values!r}")
    for i, value in enumerate(values):
        positive_int(value, f"{name}[{i}]")


def _init_layer_(layer: nn.Module, init: Callable[[torch.Tensor], object]) -> None:
    """``init(layer.weight)`` in place, and the bias, if the layer has one, set to 0."""
    init(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def mlp(sizes: Sequence[int], classes: int, *, norm: Callable[[int], nn.Module] | None = None,
        act: Callable[[], nn.Module] | None = nn.ReLU, dropout: float | None = None,
        input_dropout: float | None = None, linear: Callable[..., nn.Module] = nn.Linear,
        init: Callable[[torch.Tensor], object] | None = None, init_output: bool = True) -> nn.Sequential:
    r"""A multilayer perceptron: hidden layers ``Linear -> [norm] -> [act]``, then a
    ``Linear`` layer to ``classes`` logits.

    The layers, in the order of ``nn.Sequential`` (brackets: only when asked for)::

        [Dropout(input_dropout)] Linear(sizes[0], sizes[1]) [norm(sizes[1])] [act()]
        [Dropout(dropout)]       Linear(sizes[1], sizes[2]) [norm(sizes[2])] [act()]
        ...
        [Dropout(dropout)]       Linear(sizes[-1], classes)

    A hidden ``Linear`` layer followed by a normalization layer has no bias: the
    normalization subtracts the mean, bias included, and its shift :math:`\beta` plays
    the bias's role. The output layer always has a bias.

    Args:
        sizes: the number of inputs, then the width of each hidden layer, e.g.
            ``[40, 128, 128]``; ``[40]`` alone gives a linear classifier.
        classes: the number of outputs (logits).
        norm: a layer factory called as ``norm(width)`` (``nn.BatchNorm1d``,
            ``lambda width: nn.GroupNorm(8, width)``, ...), placed after every hidden
            ``Linear`` layer. Default: ``None``, no normalization.
        act: the activation class, instantiated once per hidden layer, or ``None`` for a
            deep *linear* network. Default: ``nn.ReLU``.
        dropout: the drop probability of a :class:`~coursekit.regularization.Dropout`
            layer before every ``Linear`` layer but the first, or ``None`` for no such
            layers. ``0.0`` keeps the layers (they do nothing), so that the layer
            indices are those of the networks with dropout. Default: ``None``.
        input_dropout: the same, for a ``Dropout`` layer on the inputs, before the first
            ``Linear`` layer. Default: ``None``.
        linear: the factory of every linear layer, output layer included, called as
            ``linear(in_features, out_features, bias=...)``. Default: ``nn.Linear``.
        init: if given, called as ``init(weight)`` to fill the weight of each linear layer
            in place right after the layer is created (its bias, if any, is then set to
            0), e.g. ``nn.init.kaiming_normal_``. Default: ``None``, PyTorch's default
            initialization. To re-initialize a built model instead (all layers first,
            then the new weights), use :func:`init_linear_`.
        init_output: whether ``init`` applies to the output layer too; ``False`` keeps
            PyTorch's default there. Default: ``True``.

    Returns:
        The ``nn.Sequential`` of the layers above, on the CPU (``.to(device)`` moves it).

    Shape:
        - Input: :math:`(N, \text{sizes}[0])`.
        - Output: :math:`(N, \text{classes})`.

    Raises:
        ValueError: an empty ``sizes``, a size or ``classes`` that is not a positive
            integer, a dropout probability outside :math:`[0, 1]`.
        TypeError: ``norm``, ``act``, ``linear`` or ``init`` is not callable.
    """
    _sizes(sizes, "sizes", "the number of inputs and the width of each hidden layer, e.g. [40, 128, 128]")
    positive_int(classes, "classes")
    for p, name in ((dropout, "dropout"), (input_dropout, "input_dropout")):
        if p is not None:
            probability(p, name, what="a probability in [0, 1] or None")
    _callable_or_none(norm, "norm", "a layer factory such as nn.BatchNorm1d")
    _callable_or_none(act, "act", "an activation class such as nn.ReLU")
    _callable_or_none(init, "init", "a function that fills a weight tensor, such as nn.init.kaiming_normal_")
    if not callable(linear):
        raise TypeError(f"linear must be a layer factory such as nn.Linear, got {linear!r}")

    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        p = input_dropout if i == 0 else dropout
        if p is not None:
            layers.append(Dropout(p))
        layer = linear(n_in, n_out, bias=norm is None)
        if init is not None:
            _init_layer_(layer, init)
        layers.append(layer)
        if norm is not None:
            layers.append(norm(n_out))
        if act is not None:
            layers.append(act())
    p = input_dropout if len(sizes) == 1 else dropout
    if p is not None:
        layers.append(Dropout(p))
    output = linear(sizes[-1], classes, bias=True)
    if init is not None and init_output:
        _init_layer_(output, init)
    return nn.Sequential(*layers, output)


def cnn(channels: Sequence[int], classes: int, *, in_channels: int = 1,
        norm: Callable[[int], nn.Module] | None = None,
        act: Callable[[], nn.Module] | None = nn.ReLU) -> nn.Sequential:
    r"""A small 2-D convolutional network: blocks ``Conv2d(3x3) -> [norm] -> [act]``, each
    block after the first halving the height and width (stride 2), then global average
    pooling and a ``Linear`` layer to ``classes`` logits.

    The layers, in the order of ``nn.Sequential`` (brackets: only when asked for)::

        Conv2d(in_channels, channels[0], 3, padding=1)            [norm(channels[0])] [act()]
        Conv2d(channels[0], channels[1], 3, stride=2, padding=1)  [norm(channels[1])] [act()]
        ...
        AdaptiveAvgPool2d(1)  Flatten()  Linear(channels[-1], classes)

    On an 8x8 image, ``channels=[16, 32]`` gives feature maps of 16x8x8, then 32x4x4. As in
    :func:`mlp`, a convolution followed by a normalization layer has no bias. ``norm`` is
    called with the number of channels: ``nn.BatchNorm2d`` normalizes each channel over
    :math:`(N, H, W)`, ``lambda c: nn.GroupNorm(4, c)`` each example's groups over
    :math:`(C/G, H, W)`.

    Args:
        channels: the number of channels of each convolution, e.g. ``[16, 32]``.
        classes: the number of outputs (logits).
        in_channels: the channels of the input image. Default: 1 (grey levels).
        norm: a layer factory called as ``norm(channels)``, placed after every convolution.
            Default: ``None``, no normalization.
        act: the activation class, instantiated once per block, or ``None``. Default: ``nn.ReLU``.

    Returns:
        The ``nn.Sequential`` of the layers above, on the CPU (``.to(device)`` moves it).

    Shape:
        - Input: :math:`(N, \text{in\_channels}, H, W)`.
        - Output: :math:`(N, \text{classes})`.

    Raises:
        ValueError: an empty ``channels``, a channel count, ``classes`` or ``in_channels`` that
            is not a positive integer.
        TypeError: ``norm`` or ``act`` is not callable.
    """
    _sizes(channels, "channels", "the channels of each convolution, e.g. [16, 32]")
    positive_int(classes, "classes")
    positive_int(in_channels, "in_channels")
    _callable_or_none(norm, "norm", "a layer factory such as nn.BatchNorm2d")
    _callable_or_none(act, "act", "an activation class such as nn.ReLU")

    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip([in_channels, *channels[:-1]], channels)):
        layers.append(nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1,
                                bias=norm is None))
        if norm is not None:
            layers.append(norm(c_out))
        if act is not None:
            layers.append(act())
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),   # (N, C, H, W) -> (N, C)
                         nn.Linear(channels[-1], classes))


def init_linear_(model: nn.Module, init: Callable[[torch.Tensor], object]) -> nn.Module:
    """Re-initialize every ``nn.Linear`` layer of ``model`` in place, in the order of
    ``model.modules()``: ``init(weight)``, and the bias, if any, set to 0.

    The same as ``model.apply(...)`` with a function that does this for linear layers:
    PyTorch's idiom for a custom initialization. Normalization layers and any other
    parameters keep their values.

    Args:
        model: the network, e.g. from :func:`mlp`.
        init: called as ``init(weight)`` to fill a weight tensor in place, e.g.
            ``nn.init.xavier_normal_`` or ``lambda w: nn.init.normal_(w, std=0.01)``.

    Returns:
        ``model``, so that a build and its initialization read as one expression.

    Raises:
        TypeError: ``init`` is not callable.
    """
    if not callable(init):
        raise TypeError(f"init must be a function that fills a weight tensor, such as "
                        f"nn.init.xavier_normal_, got {init!r}")
    for module in model.modules():
        if isinstance(module, nn.Linear):
            _init_layer_(module, init)
    return model
