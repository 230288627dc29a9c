"""Training and evaluation modes of a model's submodules, kept across a block of code.

``model.train()`` and ``model.eval()`` set every submodule; a model may mix modes on purpose
(a BatchNorm layer frozen in eval mode while the rest trains). :func:`restored_modes` puts
each submodule's own mode back when a block ends, however it ends::

    >>> with restored_modes(model):
    ...     model.eval()
    ...     loss = loss_fn(model(x), y)
    >>> # each submodule is in the mode it had before
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

__all__ = ["modes_of", "restored_modes"]


def modes_of(model: nn.Module) -> list[bool]:
    """``[m.training for m in model.modules()]``: every submodule's mode, in module order."""
    return [m.training for m in model.modules()]


@contextlib.contextmanager
def restored_modes(model: nn.Module) -> Iterator[list[bool]]:
    """Inside the block the model's modes may change; on exit each submodule gets back the
    mode it had on entry (the block's value is that list of modes)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield [training for _, training in modes]
    finally:
        for m, training in modes:
            m.training = training
