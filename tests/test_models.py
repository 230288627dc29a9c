"""coursekit.models.mlp and init_linear_, and coursekit.data.class_subset: the layers, the
bias rule, the order of the random draws (a seeded build equals the same network written
by hand), and the errors."""
from functools import partial

import pytest
import torch
from torch import nn

from coursekit.data import class_subset
from coursekit.models import cnn, init_linear_, mlp
from coursekit.regularization import Dropout


def layout(model):
    return [type(m).__name__ for m in model]


def same_parameters(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- layers ---------------------------------------------------------------------------------

def test_plain_layers_and_shapes():
    model = mlp([40, 32, 16], 10)
    assert layout(model) == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)] == \
        [(40, 32), (32, 16), (16, 10)]
    assert model(torch.randn(7, 40)).shape == (7, 10)


def test_inputs_only_is_a_linear_classifier():
    model = mlp([40], 3)
    assert layout(model) == ["Linear"]
    assert model[0].bias is not None and model(torch.randn(2, 40)).shape == (2, 3)


def test_norm_after_each_hidden_linear_and_no_bias_before_it():
    model = mlp([40, 100, 100], 5, norm=nn.BatchNorm1d, act=nn.Sigmoid)
    assert layout(model) == ["Linear", "BatchNorm1d", "Sigmoid", "Linear", "BatchNorm1d", "Sigmoid", "Linear"]
    assert model[0].bias is None and model[3].bias is None
    assert model[-1].bias is not None                       # the output layer keeps its bias
    assert model[1].num_features == 100


def test_norm_factory_gets_the_width():
    model = mlp([40, 24], 10, norm=lambda width: nn.GroupNorm(4, width))
    assert isinstance(model[1], nn.GroupNorm) and model[1].num_channels == 24


def test_no_activation_gives_a_deep_linear_network():
    assert layout(mlp([40, 8, 8], 10, act=None)) == ["Linear", "Linear", "Linear"]


def test_dropout_layers_before_each_linear():
    model = mlp([40, 256, 256], 10, dropout=0.5, input_dropout=0.2)
    assert layout(model) == ["Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert isinstance(model[0], Dropout) and [model[i].p for i in (0, 3, 6)] == [0.2, 0.5, 0.5]
    assert layout(mlp([40, 8], 10, dropout=0.5)) == ["Linear", "ReLU", "Dropout", "Linear"]


def test_zero_dropout_keeps_the_layers_and_their_indices():
    with_p, without_p = mlp([40, 16, 16], 10, dropout=0.5, input_dropout=0.2), \
        mlp([40, 16, 16], 10, dropout=0.0, input_dropout=0.0)
    assert layout(with_p) == layout(without_p)
    assert isinstance(without_p[4], nn.Linear)


def test_linear_factory_builds_every_linear_layer():
    made = []

    def linear(n_in, n_out, bias=True):
        made.append((n_in, n_out, bias))
        return nn.Linear(n_in, n_out, bias=bias)

    mlp([40, 12, 12], 10, norm=nn.LayerNorm, linear=linear)
    assert made == [(40, 12, False), (12, 12, False), (12, 10, True)]


# --- random draws and initialization ----------------------------------------------------------

def test_default_build_draws_like_the_network_written_by_hand():
    torch.manual_seed(0)
    ours = mlp([40, 128, 128], 10)
    torch.manual_seed(0)
    by_hand = nn.Sequential(nn.Linear(40, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    assert same_parameters(ours, by_hand)


def test_norm_build_draws_like_the_network_written_by_hand():
    torch.manual_seed(1)
    ours = mlp([40, 100, 100], 5, norm=nn.BatchNorm1d)
    torch.manual_seed(1)
    by_hand = nn.Sequential(nn.Linear(40, 100, bias=False), nn.BatchNorm1d(100), nn.ReLU(),
                            nn.Linear(100, 100, bias=False), nn.BatchNorm1d(100), nn.ReLU(),
                            nn.Linear(100, 5))
    assert same_parameters(ours, by_hand)


def test_init_fills_each_layer_as_it_is_created():
    he = partial(nn.init.kaiming_normal_, nonlinearity="relu")
    torch.manual_seed(2)
    ours = mlp([40, 32, 32], 10, init=he)
    torch.manual_seed(2)
    layers = []
    for n_in, n_out in [(40, 32), (32, 32), (32, 10)]:
        layer = nn.Linear(n_in, n_out)                       # PyTorch's default draws first ...
        he(layer.weight)                                     # ... then the new weights, at once
        nn.init.zeros_(layer.bias)
        layers.append(layer)
    by_hand = nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])
    assert same_parameters(ours, by_hand)
    assert all((m.bias == 0).all() for m in ours if isinstance(m, nn.Linear))


def test_init_output_false_keeps_the_default_output_layer():
    he = partial(nn.init.kaiming_normal_, nonlinearity="relu")
    torch.manual_seed(3)
    ours = mlp([40, 32], 10, norm=nn.BatchNorm1d, init=he, init_output=False)
    torch.manual_seed(3)
    hidden = nn.Linear(40, 32, bias=False)
    he(hidden.weight)
    by_hand = nn.Sequential(hidden, nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    assert same_parameters(ours, by_hand)
    assert (ours[-1].bias != 0).all()


def test_init_linear_reinitializes_after_the_build():
    init = partial(nn.init.normal_, std=0.05)
    torch.manual_seed(4)
    ours = init_linear_(mlp([40, 16, 16], 10, norm=nn.BatchNorm1d), init)
    torch.manual_seed(4)
    by_hand = mlp([40, 16, 16], 10, norm=nn.BatchNorm1d)     # all layers first ...
    for layer in by_hand:                                    # ... then the new weights
        if isinstance(layer, nn.Linear):
            init(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    assert same_parameters(ours, by_hand)
    assert (ours[-1].bias == 0).all() and (ours[1].weight == 1).all()   # BN's gamma untouched


def test_init_linear_returns_the_model():
    model = mlp([40, 4], 2)
    assert init_linear_(model, nn.init.zeros_) is model
    assert all((p == 0).all() for p in model.parameters())


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, message", [
    ([], r"sizes must list the number of inputs .* got \[\]"),
    (40, r"sizes must list .* got 40"),
    ([40, 0], r"sizes\[1\] must be a positive integer, got 0"),
    ([40.0, 8], r"sizes\[0\] must be a positive integer, got 40.0"),
])
def test_bad_sizes(sizes, message):
    with pytest.raises(ValueError, match=message):
        mlp(sizes, 10)


def test_bad_classes_and_dropout():
    with pytest.raises(ValueError, match=r"classes must be a positive integer, got 0"):
        mlp([40, 8], 0)
    with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\] or None, got 1.5"):
        mlp([40, 8], 10, dropout=1.5)
    with pytest.raises(ValueError, match=r"input_dropout must be .* got -0.1"):
        mlp([40, 8], 10, input_dropout=-0.1)


def test_not_callable():
    with pytest.raises(TypeError, match=r"init must be a function .* got 'he'"):
        mlp([40, 8], 10, init="he")
    with pytest.raises(TypeError, match=r"norm must be a layer factory .* got 'batch'"):
        mlp([40, 8], 10, norm="batch")
    with pytest.raises(TypeError, match=r"act must be an activation class .* got 'relu'"):
        mlp([40, 8], 10, act="relu")
    with pytest.raises(TypeError, match=r"linear must be a layer factory .* got None"):
        mlp([40, 8], 10, linear=None)
    with pytest.raises(TypeError, match=r"init must be a function .* got 0.01"):
        init_linear_(mlp([40, 8], 10), 0.01)


# --- class_subset -----------------------------------------------------------------------------

def test_class_subset_relabels_and_keeps_the_order():
    y = torch.tensor([0, 7, 5, 2, 9, 5, 4])
    X = torch.arange(7.0)[:, None]
    X5, y5 = class_subset(X, y, 5)
    assert X5[:, 0].tolist() == [1.0, 2.0, 4.0, 5.0] and y5.tolist() == [2, 0, 4, 0]
    X0, y0 = class_subset(X, y, 0, n=2)
    assert X0[:, 0].tolist() == [0.0, 3.0] and y0.tolist() == [0, 2]
    assert class_subset(X, y, 4, count=2)[1].tolist() == [1, 1, 0]


def test_class_subset_errors():
    X, y = torch.zeros(4, 3), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"first must be an integer >= 0, got -1"):
        class_subset(X, y, -1)
    with pytest.raises(ValueError, match=r"count must be a positive integer, got 0"):
        class_subset(X, y, 0, count=0)
    with pytest.raises(ValueError, match=r"n must be a positive integer or None, got 0"):
        class_subset(X, y, 0, n=0)
    with pytest.raises(ValueError, match=r"X has 4 examples but y has 3 labels"):
        class_subset(X, y[:3], 0)
    with pytest.raises(ValueError, match=r"no label is in \[5, 10\): the labels run from 0 to 3"):
        class_subset(X, y, 5)


# --- cnn ------------------------------------------------------------------------------------

def test_cnn_layers_shapes_and_strides():
    model = cnn([16, 32], 10)
    assert layout(model) == ["Conv2d", "ReLU", "Conv2d", "ReLU", "AdaptiveAvgPool2d", "Flatten", "Linear"]
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [(1, 16, (1, 1)), (16, 32, (2, 2))]
    assert all(c.bias is not None for c in convs)
    x = torch.randn(5, 1, 8, 8)
    assert model[:2](x).shape == (5, 16, 8, 8) and model[:4](x).shape == (5, 32, 4, 4)
    assert model(x).shape == (5, 10)


def test_cnn_norm_per_channel_and_no_bias_before_it():
    model = cnn([8, 8, 12], 3, in_channels=3, norm=nn.BatchNorm2d)
    assert layout(model)[:3] == ["Conv2d", "BatchNorm2d", "ReLU"]
    norms = [m for m in model if isinstance(m, nn.BatchNorm2d)]
    assert [n.num_features for n in norms] == [8, 8, 12]
    assert all(c.bias is None for c in model if isinstance(c, nn.Conv2d))
    gn = cnn([8, 16], 3, norm=lambda c: nn.GroupNorm(4, c), act=None)
    assert [m.num_groups for m in gn if isinstance(m, nn.GroupNorm)] == [4, 4]
    assert "ReLU" not in layout(gn)
    # batch norm in training mode: each channel of the first block's output has mean 0 over (N, H, W)
    out = model[:2](torch.randn(6, 3, 8, 8) * 5 + 2)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(8), atol=1e-5, rtol=0)


def test_cnn_seeded_build_is_reproducible():
    torch.manual_seed(3)
    a = cnn([4, 8], 2, norm=nn.BatchNorm2d)
    torch.manual_seed(3)
    b = cnn([4, 8], 2, norm=nn.BatchNorm2d)
    assert same_parameters(a, b)


@pytest.mark.parametrize("args, kwargs, error, pattern", [
    (([], 10), {}, ValueError, r"channels must list .* got \[\]"),
    (("16", 10), {}, ValueError, r"channels must list"),
    (([16, 0], 10), {}, ValueError, r"channels\[1\]"),
    (([16], 0), {}, ValueError, r"classes"),
    (([16], 10), {"in_channels": -1}, ValueError, r"in_channels"),
    (([16], 10), {"norm": 3}, TypeError, r"norm must be a layer factory such as nn.BatchNorm2d.* got 3"),
    (([16], 10), {"act": "relu"}, TypeError, r"act must be"),
])
def test_cnn_errors_name_the_value(args, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        cnn(*args, **kwargs)
