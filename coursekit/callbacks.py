"""Callbacks for :func:`coursekit.train.fit`: code that runs at fixed points of training.

A callback sees a :class:`FitState` (the model, the optimizer, the epoch, this epoch's
logged values, ...) and may change it, e.g. set ``stop_training``. ``EarlyStopping`` (in
:mod:`coursekit.regularization`) is the classic one. A plain function
``f(state) -> dict | None`` also works: it runs at the end of each epoch, and what it
returns is recorded in the history::

    >>> def weight_norm(state):
    ...     return {"weight_norm": sum(p.norm() ** 2 for p in state.model.parameters()).sqrt().item()}
    >>> history = fit(model, train, val, callbacks=[EarlyStopping(patience=3), weight_norm])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import torch
from torch import nn

if TYPE_CHECKING:
    from coursekit.train import History

__all__ = ["FitState", "Callback", "CallbackList"]


@dataclass
class FitState:
    """What callbacks see and may change during :func:`fit`.

    ``epoch`` counts from 1 and ``step`` (optimizer steps so far) from 0. Set
    ``stop_training = True`` to stop after the current epoch. ``logs`` holds the
    current epoch's values (as floats) at ``on_epoch_end``. ``loss``, ``output`` and
    ``batch`` are set for ``on_batch_end`` only and stay on the device: reading them
    (``.item()``) makes the host wait for the device at every step.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    history: History
    device: torch.device
    epochs: int
    epoch: int = 0
    step: int = 0
    logs: dict = field(default_factory=dict)
    stop_training: bool = False
    rank: int = 0
    world_size: int = 1
    loss: torch.Tensor | None = None
    output: torch.Tensor | None = None
    batch: tuple | None = None


class Callback:
    """Base class for :func:`fit` callbacks: override the events you need.

    Events, in this order: ``on_fit_start``; per epoch ``on_epoch_start`` (after the model
    was put in training mode, so it may put some layers back in eval mode, e.g. to freeze
    BatchNorm statistics), ``on_batch_end`` (after each optimizer step), ``on_epoch_end``;
    finally ``on_fit_end``. Each receives the
    :class:`FitState`. Callbacks run in list order. ``on_epoch_end`` may return a dict of
    extra values, recorded in the history (and seen by later callbacks in ``state.logs``).

    A plain function ``f(state) -> dict | None`` passed as a callback is an ``on_epoch_end``.
    """

    def on_fit_start(self, state: FitState) -> None: ...

    def on_epoch_start(self, state: FitState) -> None: ...

    def on_batch_end(self, state: FitState) -> None: ...

    def on_epoch_end(self, state: FitState) -> Mapping[str, float] | None: ...

    def on_fit_end(self, state: FitState) -> None: ...


class CallbackList:
    """Dispatch the events to the callbacks that handle them, in list order."""

    EVENTS = ("on_fit_start", "on_epoch_start", "on_batch_end", "on_epoch_end", "on_fit_end")

    def __init__(self, callbacks: Iterable):
        self.handlers: dict[str, list[Callable]] = {event: [] for event in self.EVENTS}
        for cb in callbacks:
            if not any(hasattr(cb, event) for event in self.EVENTS):
                if not callable(cb):
                    raise TypeError(f"a callback must be a Callback or a function f(state), "
                                    f"got {type(cb).__name__}")
                self.handlers["on_epoch_end"].append(cb)
                continue
            for event in self.EVENTS:
                method = getattr(type(cb), event, None)
                if method is not None and method is not getattr(Callback, event):
                    self.handlers[event].append(getattr(cb, event))

    def __call__(self, event: str, state: FitState) -> None:
        for handler in self.handlers[event]:
            handler(state)

    def epoch_end(self, state: FitState) -> None:
        for handler in self.handlers["on_epoch_end"]:
            extra = handler(state)
            if extra is not None:
                if not isinstance(extra, Mapping):
                    raise TypeError(f"on_epoch_end of {handler!r} must return a dict or None, "
                                    f"got {type(extra).__name__}")
                state.logs.update(extra)


def __getattr__(name: str):
    # EarlyStopping lives with the other regularizers; it is a callback too
    if name == "EarlyStopping":
        from coursekit.regularization import EarlyStopping
        return EarlyStopping
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
