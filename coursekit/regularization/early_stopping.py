"""Early stopping: stop training when the validation error stops improving.

:class:`EarlyStopping` is the rule of Keras and PyTorch Lightning (monitor, patience, mode,
min_delta, restore the best weights, baseline, warm-up, stop on NaN), usable by hand
(``step(value)``) or as a ``fit`` callback; ``tests/test_early_stopping_peers.py`` runs
both libraries' own test sequences against it. The functions are Prechelt's (1998) criteria, computed on whole training
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
import numbers
from typing import Sequence

import numpy as np
import torch
from torch import nn

from coursekit.callbacks import Callback, FitState
from coursekit.validate import non_negative_int, non_negative_number, positive_int

__all__ = ["EarlyStopping", "MonitorNotRecorded", "generalization_loss", "training_progress", "stop_gl",
           "stop_pq", "stop_up"]


class MonitorNotRecorded(ValueError, KeyError):
    """The value an :class:`EarlyStopping` callback monitors is not in the epoch's logs.

    A ``ValueError``, as in Keras; also a ``KeyError``, which coursekit raised before, so
    that code catching that keeps working.
    """

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


def _number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


class EarlyStopping(Callback):
    r"""Stop training when a monitored value has stopped improving (Keras's and PyTorch
    Lightning's rule).

    Call :meth:`step` once per epoch with the validation value; it returns ``True`` when
    training should stop. With ``b`` the best value so far (:math:`+\infty` in mode
    ``"min"``, :math:`-\infty` in mode ``"max"`` before the first improvement) and
    :math:`\delta` = ``min_delta``, a value :math:`v` *improves* when

    .. math:: v < b - \delta \quad (\text{mode "min"}), \qquad v > b + \delta \quad (\text{mode "max"}),

    so the first value that is a number is the first best, equal values do not improve,
    and a NaN never improves. Each :meth:`step`:

    1. before ``start_from_epoch`` (a warm-up), ignores the value: returns ``False`` and
       changes nothing but the step count;
    2. with ``check_finite``, stops at once on a NaN or :math:`\pm\infty` (a bad step);
    3. on an improving value, sets ``best`` and ``best_epoch`` (and keeps a copy of the
       model's weights) and **never stops**; it resets ``num_bad_epochs`` to 0, unless a
       ``baseline`` is set and the value does not beat it too (:math:`v < \text{baseline} -
       \delta` in mode ``"min"``), in which case it adds 1, as in Keras;
    4. on any other value, adds 1 to ``num_bad_epochs`` and stops when
       ``num_bad_epochs >= patience``.

    So ``patience=p`` stops at the ``p``-th step in a row without improvement, and
    ``patience=0`` stops at the first step that does not improve, exactly like
    ``patience=1`` (in Keras and in Lightning too: both count the bad step before comparing).
    With a ``baseline``, the count runs from the first monitored step (or from the last
    value that beat both the best and the baseline), so training stops at the first step
    without improvement once ``patience`` steps have passed without beating the baseline;
    the best weights are still those of the best value, as in Keras.

    With ``restore_best``, each improving :meth:`step` given a ``model`` keeps a copy of
    its ``state_dict``, which :meth:`restore` loads back.

    As a callback, ``fit(..., callbacks=[EarlyStopping(patience=10)])`` calls :meth:`step`
    with ``logs[monitor]`` after every epoch, stops training when it returns ``True`` and,
    with ``restore_best``, loads the best weights when training ends (also when another
    callback stopped it). Each ``fit`` starts afresh. A ``monitor`` that the run does not
    record raises :class:`MonitorNotRecorded`, a ``ValueError`` that lists what it records.

    Args:
        patience: steps without improvement tolerated; an integer >= 0. Default: 5.
        min_delta: the margin by which a value must beat the best to count as an
            improvement; >= 0. Default: 0.
        mode: ``"min"`` (losses, error rates) or ``"max"`` (accuracies). Default: ``"min"``.
        restore_best: keep (and, in ``fit``, restore) the best model's weights. Default: ``True``.
        monitor: the key of the epoch's logs watched when used as a ``fit`` callback.
            Default: ``"val_loss"``.
        baseline: a value to beat (by ``min_delta``) within ``patience`` steps, or ``None``.
            It does not change ``best``: the best value is kept, and restored, even when
            it never beats the baseline. Default: ``None``.
        start_from_epoch: the number of first steps (epochs) not monitored, an integer >= 0;
            epochs are still counted from the first call. Default: 0.
        check_finite: stop at the first NaN or infinite value. Default: ``False``, as in
            Keras, so that a NaN is one more step without improvement (the rule the
            course's assignment teaches), and a single non-finite validation value (say, a
            float16 overflow in a mixed-precision evaluation) does not end a run whose
            weights are fine; with ``restore_best`` waiting costs at most ``patience``
            epochs. PyTorch Lightning's default is ``True``: set it to stop a diverged run
            at once.

    Attributes:
        best: the best value so far, a float (``None`` until a value improves).
        best_epoch: the 0-based index of the :meth:`step` call that set ``best`` (in ``fit``,
            epoch ``best_epoch + 1``), ``None`` until then.
        num_bad_epochs: monitored steps since the last reset (see the rule).
        stopped_epoch: the 0-based index of the step that returned ``True`` first, or ``None``.

    Example::

        >>> stopper = EarlyStopping(patience=3)
        >>> [stopper.step(v) for v in [1.0, 0.8, 0.9, 0.85, 0.81]]
        [False, False, False, False, True]
        >>> stopper.best, stopper.best_epoch
        (0.8, 1)
        >>> stopper = EarlyStopping(patience=0)
        >>> [stopper.step(v) for v in [1.0, 0.8, 0.9]]
        [False, False, True]
    """

    def __init__(self, patience: int = 5, min_delta: float = 0.0, mode: str = "min",
                 restore_best: bool = True, monitor: str = "val_loss", *, baseline: float | None = None,
                 start_from_epoch: int = 0, check_finite: bool = False):
        non_negative_int(patience, "patience")
        non_negative_number(min_delta, "min_delta")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if baseline is not None and (not _number(baseline) or math.isnan(baseline)):
            raise ValueError(f"baseline must be a number (not NaN) or None, got {baseline!r}")
        non_negative_int(start_from_epoch, "start_from_epoch")
        if not isinstance(check_finite, bool):
            raise ValueError(f"check_finite must be True or False, got {check_finite!r}")
        if not isinstance(monitor, str):
            raise ValueError(f"monitor must be the name of a logged value (a str), got {monitor!r}")
        self.patience, self.min_delta, self.mode = int(patience), float(min_delta), mode
        self.restore_best, self.monitor = restore_best, monitor
        self.baseline = None if baseline is None else float(baseline)
        self.start_from_epoch, self.check_finite = int(start_from_epoch), check_finite
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far (done at the start of every ``fit``)."""
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.num_bad_epochs = 0
        self.stopped_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self._steps = 0

    def _beats(self, value: float, reference: float) -> bool:
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def improves(self, value: float) -> bool:
        """Whether ``value`` would improve on the best so far."""
        if self.best is None:  # the best starts at the worst value, as in Keras and Lightning
            return self._beats(value, math.inf if self.mode == "min" else -math.inf)
        return self._beats(value, self.best)

    def step(self, value, model: nn.Module | None = None) -> bool:
        """Record this epoch's ``value`` (a number or a one-element tensor); ``True`` means stop."""
        value = float(value)
        epoch, self._steps = self._steps, self._steps + 1
        if epoch < self.start_from_epoch:
            return False
        if self.check_finite and not math.isfinite(value):
            self.num_bad_epochs += 1
            stop = True
        elif self.improves(value):
            self.best, self.best_epoch = value, epoch
            if self.baseline is None or self._beats(value, self.baseline):
                self.num_bad_epochs = 0
            else:
                self.num_bad_epochs += 1
            if model is not None and self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            stop = False
        else:
            self.num_bad_epochs += 1
            stop = self.num_bad_epochs >= self.patience
        if stop and self.stopped_epoch is None:
            self.stopped_epoch = epoch
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
            raise MonitorNotRecorded(f"EarlyStopping monitors {self.monitor!r}, which this run does not "
                                     f"record; recorded: {sorted(state.logs)}")
        if self.step(state.logs[self.monitor], state.model):
            state.stop_training = True

    def on_fit_end(self, state: FitState) -> None:
        if self.restore_best and self.best_state is not None:
            self.restore(state.model)

    def __repr__(self) -> str:
        extra = "".join(f", {name}={getattr(self, name)!r}" for name, default in
                        (("baseline", None), ("start_from_epoch", 0), ("check_finite", False))
                        if getattr(self, name) != default)
        return (f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, "
                f"mode={self.mode!r}, restore_best={self.restore_best}, monitor={self.monitor!r}{extra})")


def _curve(values, name: str) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a sequence of per-epoch values, got shape {array.shape}")
    return array


def _check_strip(k) -> None:
    positive_int(k, "the strip length k")


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
    positive_int(s, "s")
    val = _curve(val_losses, "val_losses")
    rises = 0
    for t in _strip_ends(len(val), k):
        rises = rises + 1 if t - k >= 0 and val[t] > val[t - k] else 0
        if rises >= s:
            return t
    return None
