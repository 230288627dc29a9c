"""Tests of coursekit.plots: every plot returns a figure without error; mean_and_band's values."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import nn  # noqa: E402
from torch.testing import assert_close  # noqa: E402

from coursekit import plots  # noqa: E402
from coursekit.measure import LayerStats  # noqa: E402
from coursekit.train import fit, fit_seeds  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures(monkeypatch):
    monkeypatch.setenv("COURSEKIT_DEVICE", "cpu")
    monkeypatch.setenv("COURSEKIT_PROGRESS", "0")
    yield
    plt.close("all")


def data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 4, generator=g)
    return X, (X[:, 0] > 0).long()


def make_model():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.fixture(scope="module")
def runs():
    X, y = data()
    return fit_seeds(make_model, (X, y), (X, y), seeds=[0, 1], epochs=3, device="cpu", progress=False)


@pytest.fixture(scope="module")
def stats():
    X, y = data()
    model = make_model()
    with LayerStats(model) as s:
        fit(model, (X, y), epochs=2, batch_size=20, device="cpu", progress=False)
    return s


def test_mean_and_band():
    a = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, np.nan]])
    mean, low, high = plots.mean_and_band(a)
    assert_close(mean, np.array([2.0, 3.0, 3.0]))
    assert_close(high - mean, np.array([np.sqrt(2), np.sqrt(2), 0.0]))
    _, low, high = plots.mean_and_band(a, "minmax")
    assert_close(low, np.array([1.0, 2.0, 3.0])) and assert_close(high, np.array([3.0, 4.0, 3.0]))
    _, low, _ = plots.mean_and_band(a, "sem")
    assert_close(mean - low, np.array([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="'iqr'"):
        plots.mean_and_band(a, "iqr")
    with pytest.raises(ValueError, match=r"\(3,\)"):
        plots.mean_and_band([1.0, 2.0, 3.0])


def test_plot_history(runs):
    fig = plots.plot_history(runs.histories[0])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    fig = plots.plot_history({"a": runs.histories[0], "b": runs.histories[1]}, keys=["val_acc"], x="time")
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 2
    with pytest.raises(KeyError, match="'val_f1'"):
        plots.plot_history(runs.histories[0], keys=["val_f1"])


@pytest.mark.parametrize("band", plots.BANDS)
def test_plot_seeds(runs, band):
    fig = plots.plot_seeds({"plain": runs, "again": runs}, "val_acc", band=band)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 2
    _, ax = plt.subplots()
    assert plots.plot_seeds(runs, "train_loss", ax=ax, x="time") is ax.figure


def test_plot_lr_sweep():
    lrs = [1e-3, 1e-2, 1e-1, 1.0]
    fig = plots.plot_lr_sweep(lrs, np.array([[2.0, 2.1], [1.0, 1.2], [0.5, 0.4], [3.0, 2.0]]))
    assert isinstance(fig, Figure) and fig.axes[0].get_xscale() == "log"
    fig = plots.plot_lr_sweep(lrs, {"SGD": [2.0, 1.0, 0.5, 3.0], "Adam": [1.0, 0.5, 0.7, 4.0]}, best="min")
    assert isinstance(fig, Figure)
    with pytest.raises(ValueError, match="3 rows but there are 4"):
        plots.plot_lr_sweep(lrs, [1.0, 2.0, 3.0])


def test_plot_layer_std(stats):
    assert isinstance(plots.plot_layer_std(stats), Figure)
    assert isinstance(plots.plot_layer_std({"a": stats, "b": stats}, kind="grad", record=0), Figure)


def test_plot_histograms(stats):
    fig = plots.plot_histograms(stats)
    assert isinstance(fig, Figure) and len(fig.axes) == len(stats.layers)
    assert isinstance(plots.plot_histograms(stats, kind="grad", layers=["1"], log=False), Figure)
    with pytest.raises(KeyError, match="'9'"):
        plots.plot_histograms(stats, layers=["9"])


def test_plot_percentiles_and_stat(stats):
    assert isinstance(plots.plot_percentiles(stats, "1"), Figure)
    assert isinstance(plots.plot_percentiles(stats, -1, kind="grad"), Figure)
    assert isinstance(plots.plot_stat(stats, "frac_dead"), Figure)
    assert isinstance(plots.plot_stat(stats, "frac_saturated", layers=["1"]), Figure)


def test_empty_stats_are_explained():
    s = LayerStats(make_model())
    with pytest.raises(ValueError, match="recorded nothing"):
        plots.plot_layer_std(s)


@pytest.mark.parametrize("key, said", [("val_acc", "validation accuracy"), ("train_loss", "training loss"),
                                       ("val_loss", "validation loss"), ("test_acc", "test accuracy"),
                                       ("frac_dead", "fraction of dead units"), ("epoch", "epoch"),
                                       ("time", "time (s)"), ("grad_norm", "grad norm")])
def test_words_says_a_history_key_in_words(key, said):
    assert plots.words(key) == said


def _texts(fig) -> list[str]:
    texts = [t.get_text() for ax in fig.axes for t in (ax.xaxis.label, ax.yaxis.label, ax.title)]
    texts += [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    return [t for t in texts if t]


def test_axes_and_legends_are_labelled_in_words_not_history_keys(runs, stats):
    figures = [plots.plot_history(runs.histories[0]),
               plots.plot_history({"a": runs.histories[0]}, keys=["val_acc"], x="time"),
               plots.plot_seeds({"plain": runs}, "val_acc"), plots.plot_seeds(runs, "train_loss", band="sem"),
               plots.plot_lr_sweep([0.1, 1.0], [1.0, 2.0]), plots.plot_stat(stats, "frac_dead")]
    for fig in figures:
        texts = _texts(fig)
        assert texts
        keys = [t for t in texts if "_" in t]
        assert not keys, f"labels show code keys instead of words: {keys}"
    assert "validation accuracy (mean ± std)" in _texts(figures[2])


def test_book_style_fits_figures_to_the_column_with_legible_text():
    with matplotlib.rc_context():
        plots.use_book_style()
        fig = plt.figure()
        assert fig.get_size_inches()[0] == pytest.approx(plots.COLUMN_WIDTH)
        assert fig.dpi == plots.DPI and plt.rcParams["savefig.dpi"] == plots.DPI
        sizes = [plt.rcParams[k] for k in ("font.size", "axes.titlesize", "axes.labelsize", "xtick.labelsize",
                                             "ytick.labelsize", "legend.fontsize", "figure.titlesize")]
        assert min(matplotlib.font_manager.font_scalings.get(s, 1) * plt.rcParams["font.size"]
                   if isinstance(s, str) else s for s in sizes) == plots.MIN_FONT_SIZE
        # the smallest text, on a figure shown at 80 % of its width, renders at 9 px or more
        assert plots.MIN_FONT_SIZE * plots.DPI / 72 * 0.8 >= 9
        # a column-wide figure is shown at its natural size: 676 px is the page's output area
        assert plots.COLUMN_WIDTH * plots.DPI <= 676


def test_lr_sweep_draws_no_mean_where_a_seed_diverged_and_says_in_how_many():
    """A diverged seed (NaN loss) must not vanish into the mean of the seeds that survived."""
    lrs = [0.01, 0.1, 1.0]
    loss = np.array([[2.0, 2.2, 2.1], [1.0, 1.1, 0.9], [np.nan, 2.2, 2.3]])     # (lrs, seeds)
    fig = plots.plot_lr_sweep(lrs, {"no BN": loss})
    mean_line = fig.axes[0].get_lines()[0]
    assert np.isnan(mean_line.get_ydata()[2]) and not np.isnan(mean_line.get_ydata()[:2]).any()
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert notes == ["diverged in 1 of 3"]
    # accuracies do not diverge themselves: the seeds whose loss did are named
    acc = np.array([[0.5, 0.5, 0.5], [0.8, 0.7, 0.9], [0.1, 0.2, 0.1]])
    fig = plots.plot_lr_sweep(lrs, {"no BN": acc}, best="max", diverged={"no BN": np.isnan(loss)})
    assert np.isnan(fig.axes[0].get_lines()[0].get_ydata()[2])
    assert [t.get_text() for t in fig.axes[0].texts] == ["diverged in 1 of 3"]
    fig = plots.plot_lr_sweep(lrs, {"no BN": acc}, best="max")
    assert not fig.axes[0].texts
