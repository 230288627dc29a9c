"""Callbacks for :func:`coursekit.train.fit`: code that runs at fixed points of training.

A callback sees a :class:`FitState` (the model, the optimizer, the epoch, this epoch's
logged values, ...) and may change it, e.g. set ``stop_training``. ``EarlyStopping`` (in
:mod:`coursekit.regularization`) is the classic one. A plain function
``f(state) -> dict | None`` also works: it runs at the end of each epoch, and what it
returns is recorded in the history::

    >>> def weight_norm(state):
    ...     return {"weight_norm": sum(p.norm() ** 2 for p in state.model.parameters()).sqrt().item()}
    >>> history = fit(model, train, val, callbacks=[EarlyStopping(patience=3), weight_norm])

``fit`` builds some of its own options from the callbacks defined here, placed around the
user's callbacks: :class:`SchedulerPerEpoch` or :class:`SchedulerPerStep` (``scheduler=``) and
:class:`StepLossLogger` (``log_every=``) before them, :class:`ProgressBar` (``progress=``) after.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from coursekit.distributed import read_sums
from coursekit.history import History
from coursekit.validate import positive_int

__all__ = ["FitState", "Callback", "CallbackList", "SchedulerPerEpoch", "SchedulerPerStep",
           "StepLossLogger", "ProgressBar"]


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


# --------------------------------------------------------------------------- built-in callbacks

class SchedulerPerEpoch(Callback):
    """Step a learning-rate scheduler at the end of every epoch (``fit(..., scheduler=s)``).

    ``ReduceLROnPlateau`` is stepped with the epoch's ``val_loss``, or ``train_loss`` when
    there is no validation data; any other scheduler with ``scheduler.step()``. Put before
    the other callbacks, so that they see the learning rate of the next epoch.

    Args:
        scheduler: a ``torch.optim.lr_scheduler`` scheduler (or any object with ``step()``).
    """

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    def on_epoch_end(self, state: FitState) -> None:
        if self.plateau:
            self.scheduler.step(state.logs.get("val_loss", state.logs["train_loss"]))
        else:
            self.scheduler.step()


class SchedulerPerStep(Callback):
    """Step a learning-rate scheduler after every optimizer step
    (``fit(..., scheduler=s, scheduler_interval="step")``: warm-up, one-cycle, cosine per step).

    Put before the other callbacks, so that their ``on_batch_end`` sees the learning rate
    of the next step.

    Args:
        scheduler: a ``torch.optim.lr_scheduler`` scheduler (or any object with ``step()``).

    Raises:
        ValueError: if ``scheduler`` is a ``ReduceLROnPlateau``, which needs an epoch's value.
    """

    def __init__(self, scheduler):
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise ValueError("ReduceLROnPlateau steps on a validation value: use scheduler_interval='epoch'")
        self.scheduler = scheduler

    def on_batch_end(self, state: FitState) -> None:
        self.scheduler.step()


class StepLossLogger(Callback):
    """Record the training loss every ``every`` steps in ``state.history.steps``
    (``fit(..., log_every=every)``): ``{"step": [...], "train_loss": [...]}``.

    The losses stay on the device during the epoch and are read in one go at its end (one
    host synchronization per epoch, none per step). With several processes the recorded
    loss is the mean over the processes.

    Args:
        every: record the loss of every ``every``-th optimizer step (a positive integer).
    """

    def __init__(self, every: int):
        self.every = positive_int(every, "every")
        self.steps: list[int] = []
        self.losses: list[torch.Tensor] = []

    def on_epoch_start(self, state: FitState) -> None:
        self.steps, self.losses = [], []

    def on_batch_end(self, state: FitState) -> None:
        if state.step % self.every == 0:
            self.steps.append(state.step)
            self.losses.append(state.loss)

    def on_epoch_end(self, state: FitState) -> None:
        record = state.history.steps
        record.setdefault("step", []).extend(self.steps)
        summed = read_sums(self.losses, state.device, all_reduce=state.world_size > 1)
        record.setdefault("train_loss", []).extend(v / state.world_size for v in summed)


class ProgressBar(Callback):
    """A tqdm progress bar over the epochs, on stdout (a widget in notebooks), showing the
    epoch's ``train_*`` and ``val_*`` values (``fit(..., progress=True)``).

    Only the process of rank 0 shows it. Put after the other callbacks, so that it shows
    the values they add. :func:`~coursekit.train.fit` also calls :meth:`close` when training
    ends with an exception.

    Args:
        desc: the bar's label. Default: ``"fit"``.
    """

    def __init__(self, desc: str | None = None):
        self.desc = desc
        self.bar = None

    def on_fit_start(self, state: FitState) -> None:
        if state.rank == 0:
            with warnings.catch_warnings():  # tqdm.auto warns when ipywidgets is missing
                warnings.simplefilter("ignore")
                from tqdm.auto import tqdm
            self.bar = tqdm(total=state.epochs, desc=self.desc or "fit", unit="epoch", file=sys.stdout,
                            leave=True, dynamic_ncols=True)

    def on_epoch_end(self, state: FitState) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in state.logs.items()
                                  if k.startswith(("train_", "val_"))}, refresh=False)
            self.bar.update()

    def on_fit_end(self, state: FitState) -> None:
        self.close()

    def close(self) -> None:
        """Close the bar (nothing happens if it is closed already)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
