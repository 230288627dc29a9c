"""Tests of coursekit.measure.LayerStats: values against direct computation, hook removal."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from coursekit.measure import LayerStats, default_layers
from coursekit.train import fit, seed_everything


def make_model():
    seed_everything(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.0), nn.Linear(8, 8), nn.Tanh(),
                         nn.Flatten(), nn.Linear(8, 3))


def hook_counts(model):
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


def test_default_layers_skip_dropout_and_flatten():
    names = [n for n, _ in default_layers(make_model())]
    assert names == ["0", "1", "3", "4", "6"]


def test_layer_selection_by_type_name_and_module():
    model = make_model()
    assert LayerStats(model, nn.Linear).layers == ["0", "3", "6"]
    assert LayerStats(model, (nn.ReLU, nn.Tanh)).layers == ["1", "4"]
    assert LayerStats(model, ["4", model[1]]).layers == ["4", "1"]
    with pytest.raises(KeyError, match="'conv'"):
        LayerStats(model, ["conv"])
    with pytest.raises(ValueError, match="no layer"):
        LayerStats(model, nn.Conv2d)


def test_statistics_equal_a_direct_computation():
    model = make_model()
    x = torch.randn(32, 6) * 3
    with LayerStats(model, percentiles=(10, 50, 90), saturate_at=0.9) as stats:
        out = model(x)
        F.cross_entropy(out, torch.randint(0, 3, (32,))).backward()
    relu = model[1](model[0](x)).detach()
    tanh = model[4](model[3](relu)).detach()
    for j, a in ((1, relu), (3, tanh)):
        row = {name: stats.series(name)[0, j] for name in stats.stat_names}
        expected = {"mean": a.mean(), "std": a.std(correction=0), "frac_zero": (a == 0).float().mean(),
                    "frac_dead": (a == 0).all(dim=0).float().mean(),
                    "frac_saturated": (a.abs() >= 0.9).float().mean()}
        for q, value in zip((10, 50, 90), torch.quantile(a.reshape(-1), torch.tensor([0.1, 0.5, 0.9]))):
            expected[f"p{q}"] = value
        for name, value in expected.items():
            assert_close(torch.tensor(row[name]), value.double(), msg=lambda m: f"layer {j} {name}: {m}")
    assert stats.series("std").shape == (1, 5)


def test_gradient_statistics_are_those_of_the_output_gradient():
    model = make_model()
    x = torch.randn(16, 6)
    grads = {}

    def keep_gradient(module, inputs, output):
        output.register_hook(lambda g: grads.setdefault("g", g))

    model[3].register_forward_hook(keep_gradient)
    with LayerStats(model, nn.Linear) as stats:
        model(x).pow(2).sum().backward()
    g = grads["g"]
    assert_close(torch.tensor(stats.series("std", "grad")[0, 1]), g.std(correction=0).double())
    assert_close(torch.tensor(stats.series("mean", "grad")[0, 1]), g.mean().double())


def test_hooks_are_removed_after_the_block_even_on_error():
    model = make_model()
    before = hook_counts(model)
    stats = LayerStats(model)
    with stats:
        assert hook_counts(model) == before + 5
        model(torch.randn(4, 6))
    assert hook_counts(model) == before
    n = stats.num_records()
    model(torch.randn(4, 6)).sum().backward()  # nothing more is recorded
    assert stats.num_records() == n == 1
    with pytest.raises(RuntimeError, match="boom"):
        with LayerStats(model):
            raise RuntimeError("boom")
    assert hook_counts(model) == before


def test_backward_after_the_block_records_nothing():
    model = make_model()
    with LayerStats(model) as stats:
        loss = model(torch.randn(4, 6)).sum()
    loss.backward()
    assert stats.num_records("grad") == 0


def test_eval_passes_every_and_histograms():
    model = make_model()
    with LayerStats(model, every=2, bins=10, hist_range=(-1, 1)) as stats:
        for _ in range(5):
            model(torch.randn(8, 6) * 10)
        model.eval()
        model(torch.randn(8, 6))  # eval mode: ignored
    assert stats.num_records() == 3  # calls 1, 3, 5
    hists = stats.histograms()
    assert hists.shape == (3, 5, 10)
    assert_close(hists.sum(axis=2), np.ones((3, 5)))  # outliers go to the edge bins
    assert len(stats.bin_edges()) == 11
    stats.clear()
    assert stats.num_records() == 0


def test_records_during_fit_one_per_step():
    model = make_model()
    X, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    with LayerStats(model) as stats:
        fit(model, (X, y), (X, y), epochs=2, batch_size=10, progress=False, device="cpu")
    assert stats.series("std").shape == (8, 5)  # 4 steps x 2 epochs; validation not recorded
    assert stats.series("std", "grad").shape == (8, 5)
    assert np.all(np.isfinite(stats.series("p50")))


def test_dead_units_of_a_convolution_are_channels():
    conv = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU())
    with torch.no_grad():
        conv[0].bias[:2] = -100.0  # channels 0 and 1 never fire
    with LayerStats(conv, nn.ReLU, gradients=False) as stats:
        conv(torch.randn(5, 2, 10))
    assert stats.series("frac_dead")[0, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="gradients were not recorded"):
        stats.series("std", "grad")


def test_argument_errors_name_the_value():
    model = make_model()
    with pytest.raises(ValueError, match="every must be a positive integer, got 0"):
        LayerStats(model, every=0)
    with pytest.raises(ValueError, match=r"\[120.0\]"):
        LayerStats(model, percentiles=(5, 120))
    with pytest.raises(ValueError, match=r"\(1, -1\)"):
        LayerStats(model, hist_range=(1, -1))
    stats = LayerStats(model)
    with pytest.raises(KeyError, match="'variance'"):
        stats.series("variance")
    with pytest.raises(ValueError, match="'weights'"):
        stats.series("std", kind="weights")
