"""coursekit.regularization.penalties: the L1 penalty and its proximal callback, the max-norm
projection and its callback; against torch.renorm and Keras's MaxNorm formula, and in fit."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from coursekit.regularization import L1, MaxNorm, l1_penalty, l2_penalty, max_norm_
from coursekit.train import fit


def gen(seed):
    return torch.Generator().manual_seed(seed)


def quiet_fit(model, data, **kwargs):
    return fit(model, data, device="cpu", progress=False, quiet=True, **kwargs)


def row_norms(weight: torch.Tensor) -> torch.Tensor:
    """The 2-norm of each output unit's incoming weights."""
    return weight.flatten(1).norm(dim=1)


def layer_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


# --------------------------------------------------------------------------- penalties

def test_l1_and_l2_penalties_sum_over_the_weights_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    weights = [model[0].weight, model[3].weight]
    assert_close(l1_penalty(model), weights[0].abs().sum() + weights[1].abs().sum())
    assert_close(l2_penalty(model), weights[0].pow(2).sum() + weights[1].pow(2).sum())
    assert_close(l1_penalty([model[0].bias]), model[0].bias.abs().sum())       # tensors: as given
    l1_penalty(model).backward()
    assert torch.equal(model[0].weight.grad, model[0].weight.sign())           # the subgradient sign(w)
    assert model[0].bias.grad is None and model[1].weight.grad is None         # biases, BN untouched
    assert l1_penalty([]).item() == 0 and l2_penalty(nn.ReLU()).item() == 0


def sparse_problem(n=400, d=20, seed=0):
    """Two classes that depend on the first two of ``d`` features only."""
    X = torch.randn(n, d, generator=gen(seed))
    y = (X[:, 0] + X[:, 1] > 0).long()
    return X, y


def trained_zeros(callbacks=(), optimizer=None, loss_fn=F.cross_entropy, seed=0):
    """The linear model's weight after training on :func:`sparse_problem`."""
    torch.manual_seed(seed)
    model = nn.Linear(20, 2)
    quiet_fit(model, sparse_problem(), epochs=30, batch_size=50, seed=seed, loss_fn=loss_fn,
              metrics={}, callbacks=list(callbacks),
              optimizer=optimizer or (lambda p: torch.optim.SGD(p, lr=0.1)))
    return model.weight.detach()


def test_l1_callback_sets_unneeded_weights_to_exact_zeros_and_l2_sets_none():
    l1 = trained_zeros(callbacks=[L1(0.05)])
    assert (l1[:, 2:] == 0).float().mean() > 0.5          # most weights of the useless features
    assert (l1[:, :2] != 0).all()                          # the two features the labels depend on
    decayed = trained_zeros(optimizer=lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1))
    assert (decayed == 0).sum() == 0                       # weight decay shrinks, but to no exact zero
    torch.manual_seed(0)       # the same penalty added to the loss: subgradient steps
    model = nn.Linear(20, 2)
    quiet_fit(model, sparse_problem(), epochs=30, batch_size=50, seed=0, metrics={},
              loss_fn=lambda out, y: F.cross_entropy(out, y) + 0.05 * l1_penalty(model),
              optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    assert (model.weight == 0).sum() < (l1 == 0).sum()     # jitters around zero instead
    # (which of them generalizes better is a question for the chapter's runs, not a test)


def zero_loss(output, target):
    return (output * 0).sum()   # zero gradients: the optimizer step changes nothing


@pytest.mark.parametrize("interval, batch_size, epochs", [("step", 4, 1), ("epoch", 8, 2)])
def test_l1_soft_thresholds_with_the_learning_rate_of_each_step(interval, batch_size, epochs):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    data = (torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    quiet_fit(model, data, epochs=epochs, batch_size=batch_size, loss_fn=zero_loss, metrics={},
              shuffle=False, callbacks=[L1(0.4)], scheduler_interval=interval,
              optimizer=lambda p: torch.optim.SGD(p, lr=0.5),
              scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    expected = F.softshrink(F.softshrink(w0, 0.5 * 0.4), 0.25 * 0.4)   # two steps, lr 0.5 then 0.25
    assert torch.equal(model.weight.detach(), expected)
    assert_close(expected, w0.sign() * (w0.abs() - 0.3).clamp(min=0))  # sign(w) max(|w| - sum lr*weight, 0)
    assert torch.equal(model.bias.detach(), b0)


def test_l1_checks_its_arguments():
    with pytest.raises(ValueError, match="weight must be a number >= 0, got -0.1"):
        L1(-0.1)
    with pytest.raises(ValueError, match="got 'big'"):
        L1("big")
    model, frozen = nn.Linear(3, 2), nn.Parameter(torch.ones(5, 5))
    with pytest.raises(ValueError, match=r"L1 penalizes a tensor of shape \(5, 5\) that the optimizer does not train"):
        quiet_fit(model, (torch.randn(4, 3), torch.zeros(4, dtype=torch.long)), epochs=1,
                  callbacks=[L1(0.1, parameters=[frozen])])
    assert repr(L1(0.01)) == "L1(weight=0.01)"


# --------------------------------------------------------------------------- max-norm

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make", [lambda: nn.Linear(20, 10), lambda: nn.Conv2d(3, 10, 3),
                                  lambda: nn.Conv1d(4, 10, 5)], ids=["Linear", "Conv2d", "Conv1d"])
def test_max_norm_projects_rows_above_the_bound_and_leaves_the_others(make, dtype):
    layer = make().to(dtype)
    with torch.no_grad():
        layer.weight.normal_(generator=gen(0))
        layer.weight[1::2] *= 0.02                          # odd units well inside the ball
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    assert max_norm_(layer, 2.0) is layer
    w = layer.weight.detach()
    norms = row_norms(w)
    assert_close(norms[0::2], torch.full_like(norms[0::2], 2.0))
    assert bool((norms <= 2.0 * (1 + 4 * torch.finfo(dtype).eps)).all())
    assert torch.equal(w[1::2], w0[1::2])                   # exactly unchanged
    assert torch.equal(layer.bias.detach(), b0)
    assert_close(w, torch.renorm(w0, p=2, dim=0, maxnorm=2.0))   # torch's own max-norm projection
    assert_close(max_norm_(w.clone(), 2.0), w)             # a projected weight stays (to rounding)


def test_max_norm_dim_0_is_keras_maxnorm_axis_0_on_the_transposed_kernel():
    w = torch.randn(6, 9, generator=gen(1), dtype=torch.float64) * torch.tensor([0.1, 1, 5, 0.2, 3, 1])[:, None]
    kernel = w.T                                            # Keras's Dense kernel: (in, out)
    norms = kernel.pow(2).sum(dim=0, keepdim=True).sqrt()   # Keras MaxNorm(max_value=2, axis=0)
    keras = kernel * (norms.clamp(0, 2) / (1e-7 + norms))
    assert_close(max_norm_(w.clone(), 2.0, dim=0), keras.T)
    assert_close(max_norm_(w.clone(), 2.0, dim=1), torch.renorm(w, 2, 1, 2.0))   # one norm per input


def test_max_norm_only_touches_linear_and_convolution_weights_it_is_given():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.Linear(8, 3), nn.ConvTranspose1d(3, 4, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(50)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    max_norm_([model[0]], 1.0)
    after = dict(model.named_parameters())
    assert bool((row_norms(after["0.weight"]) <= 1 + 1e-6).all())
    for name in before:
        if name != "0.weight":
            assert torch.equal(after[name], before[name]), name
    max_norm_(model, 1.0)
    assert bool((row_norms(after["2.weight"]) <= 1 + 1e-6).all())
    assert torch.equal(after["3.weight"], before["3.weight"])   # ConvTranspose: (in, out, k), left alone


def test_max_norm_callback_keeps_every_unit_inside_the_ball_during_fit():
    X = torch.randn(300, 10, generator=gen(0))
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()

    def trained(callbacks):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
        quiet_fit(model, (X, y), epochs=15, batch_size=30, seed=0, callbacks=callbacks,
                  optimizer=lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9))
        return [row_norms(w.detach()) for w in layer_weights(model)]

    free = trained([])
    assert max(n.max().item() for n in free) > 1.5          # unconstrained, some units grow past the bound
    for norms in trained([MaxNorm(1.0)]):
        assert bool((norms <= 1.0 * (1 + 1e-6)).all()), norms.max()


def test_max_norm_checks_its_arguments():
    with pytest.raises(ValueError, match="max_norm must be positive, got 0"):
        MaxNorm(0)
    with pytest.raises(ValueError, match="max_norm must be positive, got -1"):
        max_norm_(nn.Linear(2, 2), -1)
    with pytest.raises(ValueError, match="dim must be an integer, got 'rows'"):
        MaxNorm(3.0, dim="rows")
    with pytest.raises(ValueError, match=r"dim \(2\) is out of range for a weight of shape \(2, 3\)"):
        max_norm_(nn.Linear(3, 2), 1.0, dim=2)
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(4, 2))
    w0 = model[0].weight.detach().clone() * 100
    with torch.no_grad():
        model[0].weight.copy_(w0)
    with pytest.raises(ValueError, match=r"dim \(2\) is out of range for a weight of shape \(2, 4\)"):
        max_norm_(model, 1.0, dim=2)
    assert torch.equal(model[0].weight, w0)                 # checked before anything changed
    with pytest.raises(ValueError, match=r"a dimension of units and one of inputs, got shape \(5,\)"):
        max_norm_(torch.ones(5), 1.0)
    with pytest.raises(ValueError, match=r"dim \(3\) is out of range for a weight of shape \(3, 2\)"):
        quiet_fit(nn.Linear(2, 3), (torch.randn(4, 2), torch.zeros(4, dtype=torch.long)), epochs=1,
                  callbacks=[MaxNorm(1.0, dim=3)])
    assert repr(MaxNorm()) == "MaxNorm(max_norm=3.0, dim=0)"
