"""The plots of the chapters: training curves, mean ± band over seeds, learning-rate sweeps,
and the per-layer statistics of :class:`coursekit.measure.LayerStats`.

Every function draws on ``ax`` when given (so plots can be combined) or on a new figure,
and returns the ``matplotlib`` figure. Example::

    >>> runs = {"no norm": fit_seeds(make_plain, train, val, epochs=20),
    ...         "batch norm": fit_seeds(make_bn, train, val, epochs=20)}
    >>> plot_seeds(runs, "val_acc")               # mean ± std over the seeds, one curve per run
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from coursekit.measure import LayerStats
from coursekit.train import History, SeedRuns

__all__ = ["BOOK_STYLE", "COLUMN_WIDTH", "DPI", "use_book_style", "words", "mean_and_band", "plot_history", "plot_seeds", "plot_lr_sweep", "plot_layer_std",
           "plot_histograms", "plot_percentiles", "plot_stat"]

BANDS = ("std", "sem", "minmax")
_BAND_WORDS = {"std": "std", "sem": "s.e.m.", "minmax": "range"}

# The book's figure style, set once here and used by every chapter (`use_book_style()` in its
# first cell). A figure of the column's width (COLUMN_WIDTH inches at DPI dots per inch) is
# shown at its natural size in the book's text column at a 1280-px window, and its smallest
# text (8.5 pt) renders at 11.8 px: legible even if a wider figure is shrunk to 80 %.
DPI = 100
COLUMN_WIDTH = 6.7                      # inches: 670 px at DPI; the output area of the column is 676 px
MIN_FONT_SIZE = 8.5                     # points: the smallest text the style sets
BOOK_STYLE = {
    "figure.figsize": (COLUMN_WIDTH, 3.0),
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 9.5,
    "xtick.labelsize": MIN_FONT_SIZE,
    "ytick.labelsize": MIN_FONT_SIZE,
    "legend.fontsize": MIN_FONT_SIZE,
    "legend.title_fontsize": MIN_FONT_SIZE,
    "figure.titlesize": 10.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def use_book_style() -> None:
    """Use the book's figure style (:data:`BOOK_STYLE`) from here on: figures as wide as the
    book's column by default, fonts legible at the size the page shows them, PNG at :data:`DPI`
    in a notebook. A chapter calls it in its first cell; a figure wider than one column
    passes ``figsize=(COLUMN_WIDTH, height)`` rather than a width of its own."""
    plt.rcParams.update(BOOK_STYLE)
    try:                                         # inside IPython: inline PNG at the style's dpi
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        if get_ipython() is not None:
            set_matplotlib_formats("png")
    except ImportError:
        pass


# History keys and statistic names as the axes and legends say them
_WORDS = {"epoch": "epoch", "time": "time (s)", "step": "step", "lr": "learning rate",
          "frac_dead": "fraction of dead units", "frac_saturated": "fraction of saturated units",
          "std": "standard deviation", "mean": "mean", "acc": "accuracy", "loss": "loss"}


def words(key: str) -> str:
    """A history key or statistic name in words, for an axis or a legend: ``"val_acc"`` →
    ``"validation accuracy"``, ``"train_loss"`` → ``"training loss"``, ``"frac_dead"`` →
    ``"fraction of dead units"``; other names with their underscores as spaces."""
    if key in _WORDS:
        return _WORDS[key]
    for prefix, said in (("val_", "validation "), ("train_", "training "), ("test_", "test ")):
        if key.startswith(prefix):
            return said + words(key[len(prefix):])
    return key.replace("_", " ")


def _figure(ax=None, ncols: int = 1, nrows: int = 1, size=(5.0, 3.5)):
    """``(figure, axes)``: the given ``ax`` and its figure, or a new grid of axes."""
    if ax is not None:
        return ax.figure, np.array([ax])
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows),
                             squeeze=False, layout="constrained")
    return fig, axes.ravel()


def _labelled(items, kind) -> dict:
    """``{label: item}`` from one item (label ``""``) or a mapping of them."""
    if isinstance(items, kind):
        return {"": items}
    if isinstance(items, Mapping) and items and all(isinstance(v, kind) for v in items.values()):
        return dict(items)
    raise TypeError(f"expected a {kind.__name__} or a dict of them, got {type(items).__name__}")


def mean_and_band(values, band: str = "std") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and band of several runs, ignoring NaN (runs that stopped early).

    Args:
        values: array-like of shape ``(runs, points)``.
        band: ``"std"`` (mean ± sample standard deviation, 0 for one run), ``"sem"``
            (mean ± standard error of the mean), or ``"minmax"`` (from the lowest to the
            highest run). Default: ``"std"``.

    Returns:
        ``(mean, low, high)``, each of shape ``(points,)``.
    """
    a = np.asarray(values, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"values must have shape (runs, points), got shape {a.shape}")
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    valid = ~np.isnan(a)
    n = valid.sum(axis=0)
    mean = np.where(valid, a, 0.0).sum(axis=0) / np.maximum(n, 1)
    mean[n == 0] = np.nan
    if band == "minmax":
        low = np.where(valid, a, np.inf).min(axis=0)
        high = np.where(valid, a, -np.inf).max(axis=0)
        return mean, np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)
    std = np.sqrt(np.where(valid, (a - mean) ** 2, 0.0).sum(axis=0) / np.maximum(n - 1, 1))
    half = std / np.sqrt(np.maximum(n, 1)) if band == "sem" else std
    return mean, mean - half, mean + half


def plot_history(histories, keys: Sequence[str] | None = None, *, ax=None,
                 x: str = "epoch", title: str | None = None) -> Figure:
    """Training curves of one or several runs.

    Args:
        histories: a :class:`~coursekit.train.History`, or ``{label: History}``.
        keys: the history keys to draw on one axis. Default ``None``: two panels, the
            losses (keys with ``loss``) and the other metrics (``val_acc``, ...).
        ax: draw on this axis (only with ``keys``). Default: a new figure.
        x: the key on the x axis, ``"epoch"`` or ``"time"``. Default: ``"epoch"``.
        title: the figure's title. Default: none.
    """
    runs = _labelled(histories, History)
    if keys is None:
        if ax is not None:
            raise ValueError("plot_history draws two panels when keys is None: pass keys=... to use ax")
        first = next(iter(runs.values()))
        losses = [k for k in first if "loss" in k]
        others = [k for k in first if "loss" not in k and k.startswith(("train_", "val_"))]
        panels = [losses] + ([others] if others else [])
        fig, axes = _figure(ncols=len(panels))
    else:
        panels = [list(keys)]
        fig, axes = _figure(ax)
    for panel, axis in zip(panels, axes):
        for label, history in runs.items():
            for key in panel:
                if key not in history:
                    raise KeyError(f"history{f' {label!r}' if label else ''} has no {key!r}; "
                                   f"available: {list(history)}")
                axis.plot(history[x], history[key], label=f"{label} {words(key)}".strip())
        axis.set_xlabel(words(x))
        axis.set_ylabel("loss" if all("loss" in k for k in panel) else ", ".join(map(words, panel)))
        axis.legend()
        axis.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_seeds(runs, key: str = "val_loss", *, band: str = "std", ax=None, x: str = "epoch",
               title: str | None = None) -> Figure:
    """Mean ± band over seeds of ``key``, one curve per set of runs: the book's comparison plot.

    Args:
        runs: a :class:`~coursekit.train.SeedRuns` (from :func:`~coursekit.train.fit_seeds`),
            or ``{label: SeedRuns}`` to compare.
        key: the history key. Default: ``"val_loss"``.
        band: ``"std"``, ``"sem"`` or ``"minmax"`` (see :func:`mean_and_band`). Default: ``"std"``.
        ax: draw on this axis. Default: a new figure.
        x: ``"epoch"``, or ``"time"`` (mean seconds). Default: ``"epoch"``.
        title: the axis title. Default: none.
    """
    fig, (axis,) = _figure(ax)
    for label, r in _labelled(runs, SeedRuns).items():
        mean, low, high = mean_and_band(r.stack(key), band)
        xs = mean_and_band(r.stack(x))[0]
        line, = axis.plot(xs, mean, label=f"{label} (n={len(r.seeds)})" if label else f"n={len(r.seeds)}")
        axis.fill_between(xs, low, high, color=line.get_color(), alpha=0.25, linewidth=0)
    axis.set_xlabel(words(x))
    axis.set_ylabel(f"{words(key)} (mean ± {_BAND_WORDS[band]})")
    axis.legend()
    axis.grid(alpha=0.3)
    if title:
        axis.set_title(title)
    return fig


def plot_lr_sweep(lrs, values, *, band: str = "std", ax=None, ylabel: str = "final validation loss",
                  best: str | None = "min", title: str | None = None, diverged=None) -> Figure:
    """A metric against the learning rate (log scale), with a band over seeds.

    A learning rate at which a seed diverged gets no mean (a mean of the seeds that survived
    would hide the divergence): an × at the top of the axis says in how many seeds.

    Args:
        lrs: the learning rates, shape ``(n,)``.
        values: shape ``(n,)``, or ``(n, seeds)`` for a mean ± band; or
            ``{label: values}`` for several curves.
        band: as in :func:`mean_and_band`. Default: ``"std"``.
        ax: draw on this axis. Default: a new figure.
        ylabel: label of the y axis. Default: ``"final validation loss"``.
        best: mark the ``"min"`` or ``"max"`` of each mean curve, or ``None``. Default: ``"min"``.
        title: the axis title. Default: none.
        diverged: which seeds diverged, of the shape of ``values`` (or ``{label: ...}``),
            e.g. the seeds whose loss is NaN when ``values`` are accuracies. Default: the
            values that are NaN or infinite.
    """
    if best not in ("min", "max", None):
        raise ValueError(f"best must be 'min', 'max' or None, got {best!r}")
    lrs = np.asarray(lrs, dtype=float)
    curves = dict(values) if isinstance(values, Mapping) else {"": values}
    failed = dict(diverged) if isinstance(diverged, Mapping) else {label: diverged for label in curves}
    fig, (axis,) = _figure(ax)
    for index, (label, v) in enumerate(curves.items()):
        v = np.asarray(v, dtype=float)
        v = v[:, None] if v.ndim == 1 else v                 # (n, seeds)
        if v.shape[0] != len(lrs):
            raise ValueError(f"values{f' {label!r}' if label else ''} has {v.shape[0]} rows but "
                             f"there are {len(lrs)} learning rates")
        bad = ~np.isfinite(v) if failed.get(label) is None else np.asarray(failed[label], dtype=bool).reshape(v.shape)
        n_bad = bad.sum(axis=1)                              # seeds that diverged, per learning rate
        mean, low, high = mean_and_band(np.where(bad, np.nan, v).T, band)
        for a in (mean, low, high):
            a[n_bad > 0] = np.nan
        line, = axis.plot(lrs, mean, marker="o", label=label or None)
        for x, k in zip(lrs[n_bad > 0], n_bad[n_bad > 0]):
            axis.plot(x, 0.96, marker="x", markersize=9, mew=2, color=line.get_color(),
                      transform=axis.get_xaxis_transform(), clip_on=False)
            axis.annotate(f"diverged in {k} of {v.shape[1]}", (x, 0.96), xycoords=axis.get_xaxis_transform(),
                          xytext=(-7, -14 * index), textcoords="offset points", ha="right", va="top",
                          color=line.get_color())
        if v.shape[1] > 1:
            axis.fill_between(lrs, low, high, color=line.get_color(), alpha=0.25, linewidth=0)
        if best is not None and not np.all(np.isnan(mean)):
            i = np.nanargmin(mean) if best == "min" else np.nanargmax(mean)
            axis.plot(lrs[i], mean[i], marker="*", markersize=14, color=line.get_color())
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel(ylabel)
    if any(curves):
        axis.legend()
    axis.grid(alpha=0.3, which="both")
    if title:
        axis.set_title(title)
    return fig


def plot_layer_std(stats, *, kind: str = "act", stat: str = "std", record: int = -1, ax=None,
                   logy: bool = True, title: str | None = None) -> Figure:
    """A statistic (the std by default) of each layer, across depth, at one record.

    The picture of initialization: with a good init the std stays level across layers;
    too small or too large and it shrinks or grows geometrically.

    Args:
        stats: a :class:`~coursekit.measure.LayerStats`, or ``{label: LayerStats}`` to compare
            (e.g. one per initialization).
        kind: ``"act"`` or ``"grad"``. Default: ``"act"``.
        stat: the statistic. Default: ``"std"``.
        record: which record (training step); -1 is the last. Default: -1.
        ax: draw on this axis. Default: a new figure.
        logy: logarithmic y axis. Default: ``True``.
        title: the axis title. Default: none.
    """
    fig, (axis,) = _figure(ax, size=(6.0, 3.5))
    names = None
    for label, s in _labelled(stats, LayerStats).items():
        series = s.series(stat, kind)                         # (records, layers)
        if len(series) == 0:
            raise ValueError(f"LayerStats{f' {label!r}' if label else ''} recorded nothing for "
                             f"kind={kind!r}: run a training step inside `with stats:`")
        axis.plot(range(len(s.layers)), series[record], marker="o", label=label or None)
        names = s.layers
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize="small")
    if logy:
        axis.set_yscale("log")
    axis.set_xlabel("layer")
    axis.set_ylabel(f"{stat} of the {'activations' if kind == 'act' else 'gradients'}")
    if len(_labelled(stats, LayerStats)) > 1:
        axis.legend()
    axis.grid(alpha=0.3)
    if title:
        axis.set_title(title)
    return fig


def plot_histograms(stats: LayerStats, *, kind: str = "act", layers: Sequence[str] | None = None,
                    log: bool = True, title: str | None = None) -> Figure:
    """Histograms over training, one panel per layer: fast.ai's "colorful dimension".

    Each column of a panel is the histogram of the layer's outputs at one record, the color
    its (log) fraction of elements: a healthy layer shows a smooth, stable band; a layer that
    collapses to zero or saturates shows a bright line at the center or the edges.

    Args:
        stats: a :class:`~coursekit.measure.LayerStats`.
        kind: ``"act"`` or ``"grad"``. Default: ``"act"``.
        layers: names of the layers to show. Default: all.
        log: color by the log10 of the fraction. Default: ``True``.
        title: the figure's title. Default: none.
    """
    names = list(stats.layers if layers is None else layers)
    unknown = [n for n in names if n not in stats.layers]
    if unknown:
        raise KeyError(f"layers {unknown} were not recorded; recorded: {stats.layers}")
    hists = stats.histograms(kind)                            # (records, layers, bins)
    if len(hists) == 0:
        raise ValueError(f"LayerStats recorded nothing for kind={kind!r}: run a training step "
                         f"inside `with stats:`")
    low, high = stats.ranges[kind]
    fig, axes = _figure(ncols=len(names), size=(2.6, 3.0))
    for axis, name in zip(axes, names):
        h = hists[:, stats.layers.index(name)].T              # (bins, records)
        image = np.log10(h + 1e-5) if log else h
        axis.imshow(image, origin="lower", aspect="auto", cmap="viridis",
                    extent=(0, h.shape[1], low, high), interpolation="nearest")
        axis.set_title(name, fontsize="small")
        axis.set_xlabel("record")
    axes[0].set_ylabel("activation" if kind == "act" else "gradient")
    if title:
        fig.suptitle(title)
    return fig


def plot_percentiles(stats: LayerStats, layer: str | int, *, kind: str = "act", ax=None,
                     title: str | None = None) -> Figure:
    """Percentile bands of one layer over the records: outer pair, inner pair, median.

    Args:
        stats: a :class:`~coursekit.measure.LayerStats`.
        layer: the layer's name or index in ``stats.layers``.
        kind: ``"act"`` or ``"grad"``. Default: ``"act"``.
        ax: draw on this axis. Default: a new figure.
        title: the axis title. Default: the layer's name.
    """
    if isinstance(layer, str):
        if layer not in stats.layers:
            raise KeyError(f"layer {layer!r} was not recorded; recorded: {stats.layers}")
        j = stats.layers.index(layer)
    else:
        j = layer
        if not -len(stats.layers) <= j < len(stats.layers):
            raise IndexError(f"layer index {j} out of range for {len(stats.layers)} layers")
    qs = sorted(stats.percentiles)
    fig, (axis,) = _figure(ax)
    series = {q: stats.series(f"p{q:g}", kind)[:, j] for q in qs}
    steps = np.arange(len(next(iter(series.values()))))
    for k in range(len(qs) // 2):                             # symmetric pairs, outer first
        low, high = qs[k], qs[-1 - k]
        axis.fill_between(steps, series[low], series[high], alpha=0.2 + 0.2 * k, linewidth=0,
                          color="tab:blue", label=f"p{low:g}–p{high:g}")
    if len(qs) % 2:
        axis.plot(steps, series[qs[len(qs) // 2]], color="tab:blue", label=f"p{qs[len(qs) // 2]:g}")
    axis.set_xlabel("record")
    axis.set_ylabel("activation" if kind == "act" else "gradient")
    axis.set_title(title or stats.layers[j])
    axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    return fig


def plot_stat(stats: LayerStats, stat: str = "frac_dead", *, kind: str = "act",
              layers: Sequence[str] | None = None, ax=None, title: str | None = None) -> Figure:
    """One statistic of each layer over the records (e.g. the fraction of dead units).

    Args:
        stats: a :class:`~coursekit.measure.LayerStats`.
        stat: one of ``stats.stat_names``. Default: ``"frac_dead"``.
        kind: ``"act"`` or ``"grad"``. Default: ``"act"``.
        layers: names of the layers to show. Default: all.
        ax: draw on this axis. Default: a new figure.
        title: the axis title. Default: none.
    """
    names = list(stats.layers if layers is None else layers)
    unknown = [n for n in names if n not in stats.layers]
    if unknown:
        raise KeyError(f"layers {unknown} were not recorded; recorded: {stats.layers}")
    series = stats.series(stat, kind)                         # (records, layers)
    fig, (axis,) = _figure(ax)
    for name in names:
        axis.plot(series[:, stats.layers.index(name)], label=name)
    axis.set_xlabel("record")
    axis.set_ylabel(words(stat))
    axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    if title:
        axis.set_title(title)
    return fig
