"""The measurements behind "why does batch norm work": noisy BN, internal covariate shift
(Santurkar et al. 2018, Definition 2.1) and the landscape probes, on cases with a known answer."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coursekit.smoothness import NoisyBatchNorm1d, internal_covariate_shift, landscape_probe


def mlp(bn=False, depth=4, width=16, seed=0):
    torch.manual_seed(seed)
    layers, size = [], 10
    for _ in range(depth):
        layers += [nn.Linear(size, width)] + ([nn.BatchNorm1d(width)] if bn else []) + [nn.ReLU()]
        size = width
    return nn.Sequential(*layers, nn.Linear(size, 3)).double()


def batch(seed=1, n=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 10, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


# --------------------------------------------------------------------------- noisy BN

def test_noisy_bn_shifts_and_scales_per_step_and_is_plain_bn_in_eval():
    layer = NoisyBatchNorm1d(64, generator=torch.Generator().manual_seed(0))
    plain = nn.BatchNorm1d(64)
    x = torch.randn(512, 64) * 3 + 2
    means, stds = [], []
    for _ in range(200):
        y = layer(x)
        means.append(y.mean().item())
        stds.append(y.std().item())
    means, stds = torch.tensor(means), torch.tensor(stds)
    assert means.abs().max() <= 0.5 + 0.01 and means.std() > 0.2          # mu ~ U(-0.5, 0.5) per step
    assert stds.min() >= 1.0 - 0.02 and stds.max() <= 1.25 + 0.03         # sigma ~ U(1, 1.25)
    layer.eval()
    plain.load_state_dict(layer.state_dict())
    plain.eval()
    torch.testing.assert_close(layer(x), plain(x))
    with pytest.raises(ValueError, match="jitter=-1"):
        NoisyBatchNorm1d(4, jitter=-1)


# --------------------------------------------------------------------------- ICS

def test_first_layer_has_no_ics_and_lr_zero_gives_none():
    model, (x, y) = mlp(), batch()
    before = snapshot(model)
    ics = internal_covariate_shift(model, F.cross_entropy, x, y, lr=0.5)
    assert ics["l2"].shape == (5,) and ics["l2"][0] == 0 and ics["cosine"][0] == pytest.approx(1)
    assert (ics["l2"][1:] > 0).all()
    assert_unchanged(model, before)
    zero = internal_covariate_shift(model, F.cross_entropy, x, y, lr=0.0)
    assert torch.equal(zero["l2"], torch.zeros(5, dtype=torch.float64))


def test_frozen_earlier_layers_mean_zero_ics():
    model, (x, y) = mlp(), batch()
    for p in model[:6].parameters():          # the first three Linear layers do not change
        p.requires_grad_(False)
    ics = internal_covariate_shift(model, F.cross_entropy, x, y, lr=0.5, layers=[model[6], model[8]])
    assert ics["l2"][0] == 0
    assert ics["l2"][1] > 0


def test_ics_matches_a_hand_computation():
    model, (x, y) = mlp(depth=2), batch()
    w = [p.detach().clone() for p in model.parameters()]           # W1, b1, W2, b2, W3, b3
    lr = 0.3

    def loss_at(params):
        h = F.relu(x @ params[0].T + params[1])
        h = F.relu(h @ params[2].T + params[3])
        return F.cross_entropy(h @ params[4].T + params[5], y)

    leaves = [v.clone().requires_grad_() for v in w]
    grads = torch.autograd.grad(loss_at(leaves), leaves)
    # layer 3 (the output layer): update W1, b1, W2, b2 only
    moved = [(v - lr * g if j < 4 else v).clone().requires_grad_() for j, (v, g) in enumerate(zip(w, grads))]
    g3 = torch.autograd.grad(loss_at(moved), moved)[4]
    ics = internal_covariate_shift(model, F.cross_entropy, x, y, lr=lr)
    torch.testing.assert_close(ics["l2"][2], (grads[4] - g3).norm())
    cos = (grads[4] * g3).sum() / (grads[4].norm() * g3.norm())
    torch.testing.assert_close(ics["cosine"][2], cos)


def test_the_optimizers_step_can_be_used_and_is_undone():
    model, (x, y) = mlp(), batch()
    sgd = torch.optim.SGD(model.parameters(), lr=0.3)
    torch.testing.assert_close(internal_covariate_shift(model, F.cross_entropy, x, y, optimizer=sgd),
                               internal_covariate_shift(model, F.cross_entropy, x, y, lr=0.3))
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    F.cross_entropy(model(x), y).backward()
    adam.step()                                                   # some state: moments, step count
    state, grads = snapshot(model), [p.grad.clone() for p in model.parameters()]
    adam_state = str(adam.state_dict())
    ics = internal_covariate_shift(model, F.cross_entropy, x, y, optimizer=adam)
    assert ics["l2"][0] == 0 and (ics["l2"][1:] > 0).all()
    assert_unchanged(model, state)
    assert str(adam.state_dict()) == adam_state
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    with pytest.raises(ValueError, match="either lr"):
        internal_covariate_shift(model, F.cross_entropy, x, y, lr=0.1, optimizer=adam)


def test_ics_leaves_a_bn_network_as_it_was():
    model, (x, y) = mlp(bn=True), batch()
    model.train()
    before = snapshot(model)
    internal_covariate_shift(model, F.cross_entropy, x, y, lr=0.1)
    assert_unchanged(model, before)           # the running statistics too
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="no Linear or Conv layer"):
        internal_covariate_shift(nn.Sequential(nn.ReLU()), F.mse_loss, x, x, lr=0.1)


# --------------------------------------------------------------------------- landscape

class Point(nn.Module):
    """A "model" whose output is its parameter vector: the loss is a function of w alone."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        return self.w


def test_probes_are_exact_on_a_quadratic():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = M @ M.T + torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    w0 = torch.randn(6, generator=g, dtype=torch.float64)

    def loss_fn(w, _):
        return 0.5 * w @ A @ w - b @ w

    model = Point(w0)
    etas = [0.01, 0.05, 0.1, 0.2]
    probe = landscape_probe(model, loss_fn, None, None, etas)
    grad = A @ w0 - b
    for k, eta in enumerate(etas):
        w = w0 - eta * grad
        torch.testing.assert_close(probe["loss"][k], loss_fn(w, None))
        torch.testing.assert_close(probe["grad_change"][k], eta * (A @ grad).norm())   # the Hessian's action
    assert probe["beta"] == pytest.approx(((A @ grad).norm() / grad.norm()).item())
    assert probe["grad_norm"] == pytest.approx(grad.norm().item())
    assert torch.equal(model.w.detach(), w0)                                         # restored


def test_probe_moves_downhill_and_restores_a_bn_net_in_training_mode():
    model, (x, y) = mlp(bn=True), batch()
    before = snapshot(model)
    probe = landscape_probe(model, F.cross_entropy, x, y, [1e-4, 1e-3])
    assert (probe["loss"] < probe["loss_at_start"]).all()          # small steps along -g lower the loss
    assert_unchanged(model, before)
    assert model.training
    model.eval()
    landscape_probe(model, F.cross_entropy, x, y, [1e-3])
    assert not any(m.training for m in model.modules())
    with pytest.raises(ValueError, match=r"positive numbers, got \[0.1, -1\]"):
        landscape_probe(model, F.cross_entropy, x, y, [0.1, -1])
