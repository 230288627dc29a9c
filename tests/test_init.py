"""coursekit.init against torch.nn.init: the same fans, gains and numbers for the same
generator; variances within what the sample size allows; in place, without autograd."""
import math
import warnings

import pytest
import torch
from torch import nn

from coursekit import init
from coursekit.measure import activation_stds

SHAPES = [(30, 20), (20, 30), (16, 3, 5), (8, 4, 3, 3), (6, 2, 3, 3, 3), (1, 1), (7, 1, 1)]
INITIALIZERS = ["xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"]


@pytest.mark.parametrize("shape", SHAPES)
def test_fans_match_torch(shape):
    w = torch.empty(shape)
    assert init.calculate_fan_in_and_fan_out(w) == nn.init._calculate_fan_in_and_fan_out(w)


def test_fans_of_layers_count_the_receptive_field():
    assert init.calculate_fan_in_and_fan_out(nn.Linear(20, 30).weight) == (20, 30)
    assert init.calculate_fan_in_and_fan_out(nn.Conv1d(3, 16, 5).weight) == (15, 80)
    assert init.calculate_fan_in_and_fan_out(nn.Conv2d(4, 8, 3).weight) == (36, 72)
    assert init.calculate_fan_in_and_fan_out(nn.Conv2d(8, 8, 3, groups=4).weight) == (18, 72)


@pytest.mark.parametrize("shape", [(), (5,)])
def test_fans_need_two_dimensions(shape):
    with pytest.raises(ValueError, match=rf"at least 2 dimensions.*got shape {re_shape(shape)}"):
        init.calculate_fan_in_and_fan_out(torch.empty(shape))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.xavier_uniform_(torch.empty(shape))


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("nonlinearity, param", [
    ("linear", None), ("conv1d", None), ("conv2d", None), ("conv3d", None), ("conv_transpose2d", None),
    ("sigmoid", None), ("tanh", None), ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2),
    ("leaky_relu", 0), ("leaky_relu", 1), ("selu", None)])
def test_gains_match_torch(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(nn.init.calculate_gain(nonlinearity, param), abs=0)


def test_gain_errors_name_the_value():
    with pytest.raises(ValueError, match=r"'swish'.*relu"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="'steep'"):
        init.calculate_gain("leaky_relu", "steep")
    with pytest.raises(ValueError, match="True"):
        init.calculate_gain("leaky_relu", True)


OPTIONS = {"xavier_uniform_": [{}, {"gain": 5 / 3}], "xavier_normal_": [{}, {"gain": 2.0}],
           "kaiming_uniform_": [{}, {"mode": "fan_out"}, {"nonlinearity": "relu"}, {"a": math.sqrt(5)},
                                {"a": 0.2, "mode": "fan_out", "nonlinearity": "leaky_relu"},
                                {"nonlinearity": "tanh"}],
           "kaiming_normal_": [{}, {"mode": "fan_out", "nonlinearity": "relu"}, {"a": 0.1}]}


@pytest.mark.parametrize("name", INITIALIZERS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_generator_gives_torchs_values(name, shape, dtype):
    for options in OPTIONS[name]:
        ours = getattr(init, name)(torch.empty(shape, dtype=dtype), **options,
                                   generator=torch.Generator().manual_seed(7))
        theirs = getattr(nn.init, name)(torch.empty(shape, dtype=dtype), **options,
                                        generator=torch.Generator().manual_seed(7))
        assert torch.equal(ours, theirs), (name, options)


def expected_std(name, shape, gain=1.0, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    if name.startswith("xavier"):
        return gain * math.sqrt(2 / (fan_in + fan_out))
    fan = fan_in if mode == "fan_in" else fan_out
    return nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name, shape, options", [
    ("xavier_uniform_", (1000, 400), {}), ("xavier_normal_", (600, 900), {"gain": 5 / 3}),
    ("kaiming_uniform_", (800, 500), {"nonlinearity": "relu"}),
    ("kaiming_normal_", (128, 64, 3, 3), {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_uniform_", (64, 32, 5, 5), {"a": math.sqrt(5)})])
def test_variance_within_what_the_sample_size_allows(name, shape, options, seed):
    w = getattr(init, name)(torch.empty(shape, dtype=torch.float64), **options,
                            generator=torch.Generator().manual_seed(seed))
    n, std = w.numel(), expected_std(name, shape, **options)
    # standard errors: of the mean sigma/sqrt(n); of the variance sqrt((mu4 - sigma^4) / n),
    # mu4 = 3 sigma^4 (normal) or 9/5 sigma^4 (uniform: b^4/5 with b^2 = 3 sigma^2)
    mu4 = (9 / 5 if "uniform" in name else 3) * std ** 4
    assert abs(w.mean().item()) < 5 * std / math.sqrt(n)
    assert abs(w.var(correction=0).item() - std ** 2) < 5 * math.sqrt((mu4 - std ** 4) / n)
    if "uniform" in name:
        bound = math.sqrt(3) * std
        assert w.abs().max().item() <= bound
        assert w.abs().max().item() > 0.999 * bound  # the whole interval is used, not std as bound


@pytest.mark.parametrize("name", INITIALIZERS)
def test_in_place_without_autograd(name):
    layer = nn.Linear(50, 40)
    weight = layer.weight
    out = getattr(init, name)(layer.weight)
    assert out is weight and layer.weight is weight
    assert out.requires_grad and out.grad_fn is None and out.is_leaf
    assert not torch.equal(out, nn.Linear(50, 40).weight)  # (it did change the values)


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_mode_error_names_the_mode_and_the_choices(name):
    with pytest.raises(ValueError, match=r"mode 'fan_avg' not supported; use one of \('fan_in', 'fan_out'\)"):
        getattr(init, name)(torch.empty(3, 4), mode="fan_avg")


@pytest.mark.parametrize("name", INITIALIZERS)
def test_zero_element_tensors_are_left_alone_quietly(name):
    w = torch.empty(0, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert getattr(init, name)(w) is w


# --------------------------------------------------------------------------- LSUV

def deep_relu_mlp(depth=20, width=64):
    layers = [nn.Linear(40, width), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lsuv_gives_every_layer_unit_variance_on_the_batch(seed):
    torch.manual_seed(seed)
    model, batch = deep_relu_mlp(), torch.randn(256, 40) * 3 + 1
    with torch.no_grad():  # a bad start: activations vanish with depth
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(0.5)
                m.bias.zero_()
    assert activation_stds(model, batch, layers=nn.Linear)[-1] < 1e-3
    model.eval()
    out = init.lsuv_(model, batch, tol=0.02, generator=torch.Generator().manual_seed(seed))
    assert out is model and not model.training
    stds = activation_stds(model, batch, layers=nn.Linear)
    assert torch.all((stds - 1).abs() <= 0.02), stds
    for m in model:
        if isinstance(m, nn.Linear):
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
            gram = m.weight @ m.weight.T if m.weight.shape[0] <= m.weight.shape[1] else m.weight.T @ m.weight
            scale = gram.diagonal().mean()
            torch.testing.assert_close(gram / scale, torch.eye(len(gram)), atol=1e-4, rtol=0)
            assert m.weight.grad is None


def test_lsuv_target_std_and_conv_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.Tanh(), nn.Conv1d(8, 8, 3, padding=1), nn.Flatten(),
                          nn.Linear(8 * 40, 10))
    batch = torch.randn(128, 1, 40)
    init.lsuv_(model, batch, target_std=0.5, tol=0.01)
    stds = activation_stds(model, batch, layers=(nn.Conv1d, nn.Linear))
    assert torch.all((stds - 0.5).abs() <= 0.01), stds


def test_lsuv_is_reproducible_with_a_generator():
    model_a, model_b, batch = deep_relu_mlp(6), deep_relu_mlp(6), torch.randn(64, 40)
    init.lsuv_(model_a, batch, generator=torch.Generator().manual_seed(3))
    init.lsuv_(model_b, batch, generator=torch.Generator().manual_seed(3))
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)


def test_lsuv_errors():
    model, batch = deep_relu_mlp(3), torch.randn(8, 40)
    with pytest.raises(ValueError, match="target_std must be positive, got 0"):
        init.lsuv_(model, batch, target_std=0)
    with pytest.raises(ValueError, match="tol must be positive, got -0.1"):
        init.lsuv_(model, batch, tol=-0.1)
    with pytest.raises(ValueError, match="max_iter must be a positive integer, got 0"):
        init.lsuv_(model, batch, max_iter=0)
    with pytest.raises(ValueError, match="no Linear or Conv layer in Sequential"):
        init.lsuv_(nn.Sequential(nn.ReLU()), batch)
    with pytest.raises(ValueError, match="not used"):
        init.lsuv_(model, batch, layers=[nn.Linear(3, 3)])


# --------------------------------------------------------------------------- activation_stds

def test_activation_stds_is_the_population_std_of_each_layer_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.Tanh(), nn.Linear(20, 20), nn.Tanh(), nn.Linear(20, 3))
    x = torch.randn(64, 10)
    outputs, h = [], x
    for m in model:
        h = m(h)
        if isinstance(m, nn.Tanh):
            outputs.append(h.std(correction=0).item())
    got = activation_stds(model, x, layers=nn.Tanh)
    assert got.shape == (2,) and got.dtype == torch.float64
    torch.testing.assert_close(got, torch.tensor(outputs, dtype=torch.float64), rtol=1e-5, atol=1e-7)
    assert model.training and all(p.grad is None for p in model.parameters())
    model.eval()
    assert activation_stds(model, x, layers=[model[4]]).shape == (1,) and not model.training


def test_activation_stds_marks_an_unused_layer_nan():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.ReLU(), nn.ReLU()

        def forward(self, x):
            return self.used(x)
    got = activation_stds(Net(), torch.randn(5, 4), layers=nn.ReLU)
    assert not torch.isnan(got[0]) and torch.isnan(got[1])
