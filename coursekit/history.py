"""What :func:`coursekit.train.fit` records: a :class:`History`, one list per logged value.

It lives in its own module so that both :mod:`coursekit.callbacks` (which writes into it) and
:mod:`coursekit.train` (which returns it) can import it; ``from coursekit.train import History``
works too.
"""
from __future__ import annotations

import math
from typing import Mapping

__all__ = ["History"]


class History(dict):
    """What :func:`fit` records: a ``dict`` of lists with one entry per epoch.

    Keys: ``epoch`` (1, 2, ...), ``train_loss`` (mean over the epoch's samples), ``lr``
    (of the first parameter group, at the start of the epoch), ``time`` (seconds since ``fit``
    started, at the end of the epoch); with validation data ``val_loss`` and
    ``val_<metric>`` per metric (``val_acc`` by default for classification); with
    ``train_metrics=True`` ``train_<metric>``; and any value a callback returns.
    Missing entries are NaN, so every list has one entry per epoch.

    Attributes:
        steps: with ``log_every=k``, the training loss every ``k`` steps:
            ``{"step": [...], "train_loss": [...]}``.
        warnings: with ``quiet=True``, the warnings raised during training, as text.

    Example::

        >>> plt.plot(history["epoch"], history["val_loss"])
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps: dict[str, list] = {}
        self.warnings: list[str] = []

    @property
    def num_epochs(self) -> int:
        return len(self.get("epoch", ()))

    def append(self, row: Mapping[str, float]) -> None:
        """Add one epoch; keys new in ``row`` get NaN for the earlier epochs, and keys
        missing from ``row`` get NaN for this one."""
        n = self.num_epochs
        for key, value in row.items():
            self.setdefault(key, [math.nan] * n).append(value)
        for key, values in self.items():
            if len(values) == n:
                values.append(math.nan)

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v[-1]:.4g}" if isinstance(v[-1], float) else f"{k}={v[-1]}"
                         for k, v in self.items() if k != "epoch" and v)
        return f"History(epochs={self.num_epochs}{', ' if last else ''}{last})"
