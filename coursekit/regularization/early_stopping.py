"""Early stopping: stop training when the validation error stops improving.

:class:`EarlyStopping` is the rule of Keras and most libraries (monitor, patience, mode,
min_delta, restore the best weights), usable by hand (``step(value)``) or as a ``fit``
callback. The functions are Prechelt's (1998) criteria, computed on whole training
curves so that they can be compared on the same runs:

- generalization loss :math:`GL(t) = 100\\,(E_{va}(t) / E_{opt}(t) - 1)`, the percentage
  by which the validation error exceeds its lowest value so far; :math:`GL_\\alpha` stops
  when it exceeds :math:`\\alpha`;
- training progress over strips of :math:`k` epochs,
  :math:`P_k(t) = 1000\\,\\big(\\sum_{t'=t-k+1}^{t} E_{tr}(t') / (k \\min_{t'} E_{tr}(t')) - 1\\big)`,
  large while the training error still falls fast; :math:`PQ_\\alpha` stops at the end of
  a strip when :math:`GL(t) / P_k(t) > \\alpha`;
- :math:`UP_s` stops at the end of a strip when the validation error has risen in
  :math:`s` successive strips.

Epochs here are 0-based indices into the sequences (the index of the ``step`` call).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from coursekit.callbacks import Callback, FitState

__all__ = ["EarlyStopping", "generalization_loss", "training_progress", "stop_gl", "stop_pq", "stop_up"]


class EarlyStopping(Callback):
    """Stop when a monitored value has not improved for ``patience`` steps (epochs).

    Call :meth:`step` once per epoch with the validation value; it returns ``True`` when
    training should stop. The rule:

    - the first value is the best so far (unless it is NaN);
    - in mode ``"min"`` a value improves on the best only if ``value < best - min_delta``
      (mode ``"max"``: ``value > best + min_delta``); a NaN value never improves;
    - an improving step resets ``num_bad_epochs`` to 0, any other step adds 1;
    - stop when ``num_bad_epochs >= patience`` (so ``patience=0`` stops at once).

    With ``restore_best``, each improving :meth:`step` given a ``model`` keeps a copy of
    its ``state_dict``, which :meth:`restore` loads back.

    As a callback, ``fit(..., callbacks=[EarlyStopping(patience=10)])`` calls :meth:`step`
    with ``history[monitor]`` after every epoch, stops training when it returns ``True``
    and, with ``restore_best``, loads the best weights when training ends. Each ``fit``
    starts afresh.

    Args:
        patience: non-improving steps tolerated; an integer >= 0. Default: 5.
        min_delta: the smallest change that counts as an improvement; >= 0. Default: 0.
        mode: ``"min"`` (losses, error rates) or ``"max"`` (accuracies). Default: ``"min"``.
        restore_best: keep (and, in ``fit``, restore) the best model's weights. Default: ``True``.
        monitor: the history key watched when used as a ``fit`` callback. Default: ``"val_loss"``.

    Attributes:
        best: the best value so far (``None`` before the first valid value).
        best_epoch: the 0-based index of the :meth:`step` call that set ``best`` (in ``fit``,
            epoch ``best_epoch + 1``), ``None`` before.
        num_bad_epochs: steps since the last improvement.
        stopped_epoch: the 0-based index of the step that returned ``True`` first, or ``None``.

    Example::

        >>> stopper = EarlyStopping(patience=3)
        >>> [stopper.step(v) for v in [1.0, 0.8, 0.9, 0.85, 0.81]]
        [False, False, False, False, True]
        >>> stopper.best, stopper.best_epoch
        (0.8, 1)
    """

    def __init__(self, patience: int = 5, min_delta: float = 0.0, mode: str = "min",
                 restore_best: bool = True, monitor: str = "val_loss"):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or not min_delta >= 0:
            raise ValueError(f"min_delta must be a number >= 0, got {min_delta!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.patience, self.min_delta, self.mode = patience, float(min_delta), mode
        self.restore_best, self.monitor = restore_best, monitor
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far (done at the start of every ``fit``)."""
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.num_bad_epochs = 0
        self.stopped_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self._steps = 0

    def improves(self, value: float) -> bool:
        """Whether ``value`` would improve on the best so far."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, value, model: nn.Module | None = None) -> bool:
        """Record this epoch's ``value`` (a number or a 0-dim tensor); ``True`` means stop."""
        value = float(value)
        if self.improves(value):
            self.best, self.best_epoch, self.num_bad_epochs = value, self._steps, 0
            if model is not None and self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.num_bad_epochs += 1
        stop = self.num_bad_epochs >= self.patience
        if stop and self.stopped_epoch is None:
            self.stopped_epoch = self._steps
        self._steps += 1
        return stop

    def restore(self, model: nn.Module) -> nn.Module:
        """Load the best weights into ``model`` (they were kept by :meth:`step`)."""
        if self.best_state is None:
            raise RuntimeError("no best weights were kept: pass the model to step(value, model) "
                               "with restore_best=True")
        model.load_state_dict(self.best_state)
        return model

    # ---- as a fit callback

    def on_fit_start(self, state: FitState) -> None:
        self.reset()

    def on_epoch_end(self, state: FitState) -> None:
        if self.monitor not in state.logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, which this run does not "
                           f"record; recorded: {sorted(state.logs)}")
        if self.step(state.logs[self.monitor], state.model):
            state.stop_training = True

    def on_fit_end(self, state: FitState) -> None:
        if self.restore_best and self.best_state is not None:
            self.restore(state.model)

    def __repr__(self) -> str:
        return (f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, "
                f"mode={self.mode!r}, restore_best={self.restore_best}, monitor={self.monitor!r})")


def _curve(values, name: str) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a sequence of per-epoch values, got shape {array.shape}")
    return array


def _check_strip(k) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"the strip length k must be a positive integer, got {k!r}")


def generalization_loss(val_losses: Sequence[float]) -> np.ndarray:
    r"""Prechelt's generalization loss, in percent, for every epoch :math:`t`:

    .. math:: GL(t) = 100 \left(\frac{E_{va}(t)}{E_{opt}(t)} - 1\right), \qquad
              E_{opt}(t) = \min_{t' \le t} E_{va}(t').
    """
    val = _curve(val_losses, "val_losses")
    return 100 * (val / np.minimum.accumulate(val) - 1)


def training_progress(train_losses: Sequence[float], k: int = 5) -> np.ndarray:
    r"""Prechelt's training progress over the strip of :math:`k` epochs ending at :math:`t`,
    in per mille; NaN for :math:`t < k - 1`:

    .. math:: P_k(t) = 1000 \left(\frac{\sum_{t'=t-k+1}^{t} E_{tr}(t')}{k \min_{t-k<t'\le t} E_{tr}(t')} - 1\right).
    """
    _check_strip(k)
    train = _curve(train_losses, "train_losses")
    progress = np.full(len(train), np.nan)
    for t in range(k - 1, len(train)):
        strip = train[t - k + 1:t + 1]
        progress[t] = 1000 * (strip.sum() / (k * strip.min()) - 1)
    return progress


def _first(condition: np.ndarray, epochs) -> int | None:
    hits = [t for t in epochs if condition[t]]
    return int(hits[0]) if hits else None


def stop_gl(val_losses: Sequence[float], alpha: float) -> int | None:
    """:math:`GL_\\alpha`: the first epoch with :math:`GL(t) > \\alpha`, or ``None``."""
    gl = generalization_loss(val_losses)
    return _first(gl > alpha, range(len(gl)))


def _strip_ends(n: int, k: int) -> range:
    return range(k - 1, n, k)


def stop_pq(train_losses: Sequence[float], val_losses: Sequence[float], alpha: float,
            k: int = 5) -> int | None:
    """:math:`PQ_\\alpha`: the first end of a strip (:math:`t + 1` a multiple of :math:`k`)
    with :math:`GL(t) / P_k(t) > \\alpha`, or ``None``.

    :math:`P_k` measures *relative* progress, and that is where PQ's assumption can fail:
    a training loss that decays geometrically toward 0 (cross-entropy on a training set the
    network memorizes) keeps :math:`P_k` as large as ever, so PQ waits long after the
    validation loss has turned up; a training loss that flattens at a positive value
    drives :math:`P_k` to 0, and PQ stops at the first small rise.
    """
    gl = generalization_loss(val_losses)
    progress = training_progress(train_losses, k)
    if len(progress) != len(gl):
        raise ValueError(f"train_losses and val_losses must have one value per epoch, got "
                         f"{len(progress)} and {len(gl)}")
    with np.errstate(divide="ignore", invalid="ignore"):
        quotient = gl / progress
    return _first(quotient > alpha, _strip_ends(len(gl), k))


def stop_up(val_losses: Sequence[float], s: int, k: int = 5) -> int | None:
    """:math:`UP_s`: the first end of a strip :math:`t` at which the validation loss rose in
    :math:`s` successive strips, :math:`E_{va}(t - jk) > E_{va}(t - (j+1)k)` for
    :math:`j = 0, \\dots, s-1`; or ``None``."""
    _check_strip(k)
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise ValueError(f"s must be a positive integer, got {s!r}")
    val = _curve(val_losses, "val_losses")
    rises = 0
    for t in _strip_ends(len(val), k):
        rises = rises + 1 if t - k >= 0 and val[t] > val[t - k] else 0
        if rises >= s:
            return t
    return None
