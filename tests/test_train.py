"""Tests of coursekit.train: fit, evaluate, predict, devices, seeds, callbacks, several seeds.

CPU only, small models, seconds in all. Tensors are compared with assert_close.
"""
from __future__ import annotations

import dataclasses
import inspect
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from coursekit.train import (Callback, EarlyStopping, History, SeedRuns, accuracy, default_device,
                             evaluate, fit, fit_seeds, predict, run_scale, scaled, seed_everything)
from coursekit.train import _epoch_order  # the sharding rule, tested directly
from coursekit.train import FitOptions
from coursekit.callbacks import ProgressBar


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """The tests set the environment variables they need; none leaks in from outside."""
    for name in ("COURSEKIT_DEVICE", "COURSEKIT_PROGRESS", "COURSEKIT_QUIET", "COURSEKIT_SCALE", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COURSEKIT_DEVICE", "cpu")
    monkeypatch.setenv("COURSEKIT_PROGRESS", "0")


def make_data(n=120, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long()  # learnable labels in {0, 1, 2}
    return X[: n * 3 // 4], y[: n * 3 // 4], X[n * 3 // 4:], y[n * 3 // 4:]


def make_mlp(d=5, classes=3, dropout=0.0):
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, classes))


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def assert_same_history(h1, h2, **tol):
    assert set(h1) == set(h2)
    for key in h1:
        if key != "time":
            assert_close(torch.tensor(h1[key]), torch.tensor(h2[key]), msg=lambda m: f"{key}: {m}", **tol)


def train(seed=0, dropout=0.2, **kwargs):
    Xt, yt, Xv, yv = make_data()
    seed_everything(seed)
    model = make_mlp(dropout=dropout)
    kwargs = {"epochs": 3, "batch_size": 16, "optimizer": sgd, **kwargs}
    return model, fit(model, (Xt, yt), (Xv, yv), **kwargs)


# --------------------------------------------------------------------------- device and seeds

def test_default_device_argument_and_environment(monkeypatch):
    assert default_device("cpu") == torch.device("cpu")
    assert default_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setenv("COURSEKIT_DEVICE", "cpu")
    assert default_device() == torch.device("cpu")
    monkeypatch.delenv("COURSEKIT_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert default_device().type == expected


def test_default_device_errors_name_the_value(monkeypatch):
    with pytest.raises(ValueError, match="'gpu0'"):
        default_device("gpu0")
    monkeypatch.setenv("COURSEKIT_DEVICE", "tpu:x")
    with pytest.raises(ValueError, match="COURSEKIT_DEVICE"):
        default_device()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            default_device("cuda:1")


def test_scaled_is_the_book_size_unless_coursekit_scale_asks_for_more(monkeypatch):
    assert run_scale() == 1.0
    assert [scaled(n) for n in (1, 3, 60, 30_000)] == [1, 3, 60, 30_000]
    monkeypatch.setenv("COURSEKIT_SCALE", "4")
    assert run_scale() == 4.0
    assert [scaled(n) for n in (1, 3, 60)] == [4, 12, 240]
    monkeypatch.setenv("COURSEKIT_SCALE", " 0.25 ")
    assert [scaled(n) for n in (1, 3, 60)] == [1, 1, 15]               # never below the minimum
    assert scaled(3, minimum=2) == 2 and scaled(30_000, minimum=10_000) == 10_000
    monkeypatch.setenv("COURSEKIT_SCALE", "")
    assert scaled(7) == 7


@pytest.mark.parametrize("value", ["four", "0", "-2", "nan", "inf"])
def test_scaled_rejects_a_bad_coursekit_scale_naming_it(monkeypatch, value):
    monkeypatch.setenv("COURSEKIT_SCALE", value)
    with pytest.raises(ValueError, match=f"COURSEKIT_SCALE must be a positive number.*got '{value}'"):
        scaled(3)


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=2.5), dict(n=True), dict(n=3, minimum=0)])
def test_scaled_rejects_a_size_that_is_not_a_positive_integer(kwargs):
    with pytest.raises(ValueError, match="must be a positive integer, got"):
        scaled(**kwargs)


def test_seed_everything_repeats_every_generator():
    import random
    draws = []
    for _ in range(2):
        assert seed_everything(3) == 3
        draws.append((random.random(), np.random.rand(), torch.rand(3)))
    assert draws[0][:2] == draws[1][:2]
    assert_close(draws[0][2], draws[1][2], rtol=0, atol=0)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0"])
def test_seed_everything_rejects_bad_seeds(seed):
    with pytest.raises((ValueError, TypeError), match=repr(seed) if isinstance(seed, str) else str(seed)):
        seed_everything(seed)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_same_seed_gives_the_same_history(seed):
    model1, h1 = train(seed)
    model2, h2 = train(seed)
    assert_same_history(h1, h2, rtol=0, atol=0)
    for p1, p2 in zip(model1.parameters(), model2.parameters()):
        assert_close(p1, p2, rtol=0, atol=0)


def test_seed_argument_of_fit_fixes_shuffling_and_dropout():
    Xt, yt, Xv, yv = make_data()
    histories = []
    for _ in range(2):
        torch.manual_seed(0)
        model = make_mlp(dropout=0.3)
        torch.rand(5)  # a different global RNG state: fit(seed=...) must not depend on it
        histories.append(fit(model, (Xt, yt), (Xv, yv), epochs=2, optimizer=sgd, seed=4))
    assert_same_history(*histories, rtol=0, atol=0)


def test_different_seeds_give_different_histories():
    _, h1 = train(0)
    _, h2 = train(1)
    assert h1["train_loss"] != pytest.approx(h2["train_loss"])


# --------------------------------------------------------------------------- batching

class Spy(nn.Module):
    """A linear model that records the inputs of each training step."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 2)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        if self.training:
            self.seen.append(x[:, 0].detach().long().clone())
        return self.linear(x)


@pytest.mark.parametrize("n, batch_size", [(50, 8), (64, 16), (7, 10)])
def test_every_sample_once_per_epoch(n, batch_size):
    X = torch.arange(n, dtype=torch.float32).unsqueeze(1)  # sample i is the number i
    y = torch.arange(n) % 2
    targets = []

    def loss_fn(out, target):
        targets.append(target.clone())
        return F.cross_entropy(out, target)

    model, epochs = Spy(), 3
    fit(model, (X, y), epochs=epochs, batch_size=batch_size, loss_fn=loss_fn, optimizer=sgd, seed=0)
    steps = -(-n // batch_size)
    assert len(model.seen) == epochs * steps
    sizes = [len(b) for b in model.seen[:steps]]
    assert sizes == [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    orders = []
    for e in range(epochs):
        order = torch.cat(model.seen[e * steps:(e + 1) * steps])
        assert_close(order.sort().values, torch.arange(n))  # each sample exactly once
        orders.append(order)
    for xb, yb in zip(model.seen, targets):
        assert_close(yb, xb % 2)  # labels travel with their samples
    if n > 2:
        assert not torch.equal(orders[0], orders[1]), "the order must change between epochs"


def test_drop_last_and_no_shuffle():
    X = torch.arange(10, dtype=torch.float32).unsqueeze(1)
    model = Spy()
    fit(model, (X, torch.zeros(10, dtype=torch.long)), epochs=2, batch_size=4, drop_last=True,
        shuffle=False, optimizer=sgd)
    assert [b.tolist() for b in model.seen] == [[0, 1, 2, 3], [4, 5, 6, 7]] * 2


def test_drop_last_with_too_few_samples_is_an_error():
    X, y = torch.randn(3, 5), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="3 samples with batch_size=4"):
        fit(make_mlp(), (X, y), epochs=1, batch_size=4, drop_last=True)


@pytest.mark.parametrize("n, world_size", [(10, 3), (12, 4), (2, 3), (9, 1)])
def test_epoch_order_shards_one_permutation_like_distributed_sampler(n, world_size):
    shards = [_epoch_order(n, torch.Generator().manual_seed(5), rank=r, world_size=world_size)
              for r in range(world_size)]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    per_rank = -(-n // world_size)
    assert all(len(s) == per_rank for s in shards)  # equal steps on every process
    interleaved = torch.stack(shards, dim=1).reshape(-1)  # (per_rank * world_size,)
    padded = perm.repeat(-(-per_rank * world_size // n))[:per_rank * world_size]
    assert_close(interleaved, padded)
    assert set(interleaved.tolist()) == set(range(n))


def test_a_loader_gives_the_same_history_as_tensors():
    Xt, yt, Xv, yv = make_data()
    seed_everything(0)
    model1 = make_mlp()
    h1 = fit(model1, (Xt, yt), (Xv, yv), epochs=3, batch_size=16, optimizer=sgd, shuffle=False)
    seed_everything(0)
    model2 = make_mlp()
    loader = DataLoader(TensorDataset(Xt, yt), batch_size=16)  # the same batches, in order
    h2 = fit(model2, loader, DataLoader(TensorDataset(Xv, yv), batch_size=7), epochs=3, optimizer=sgd)
    assert_same_history(h1, h2)
    assert_close(model1[0].weight, model2[0].weight)


def test_tensor_dataset_is_accepted():
    Xt, yt, Xv, yv = make_data()
    h = fit(make_mlp(), TensorDataset(Xt, yt), TensorDataset(Xv, yv), epochs=1)
    assert h.num_epochs == 1 and "val_acc" in h


# --------------------------------------------------------------------------- history

def test_history_keys_and_lengths():
    _, h = train(epochs=4, train_metrics=True)
    assert list(h) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time"]
    assert h["epoch"] == [1, 2, 3, 4]
    assert all(len(v) == 4 for v in h.values())
    assert all(isinstance(v, float) for v in h["val_loss"])
    assert h["time"] == sorted(h["time"])
    assert h["train_loss"][-1] < h["train_loss"][0]


def test_history_without_validation_or_for_regression():
    X = torch.randn(40, 3)
    y = X @ torch.tensor([1.0, -2.0, 0.5])
    h = fit(nn.Linear(3, 1), (X, y.unsqueeze(1)), (X, y.unsqueeze(1)), epochs=2, loss_fn=F.mse_loss)
    assert list(h) == ["epoch", "train_loss", "val_loss", "lr", "time"]  # no accuracy for mse
    h = fit(nn.Linear(3, 1), (X, y.unsqueeze(1)), epochs=2, loss_fn=F.mse_loss)
    assert "val_loss" not in h


def test_train_loss_is_the_mean_over_the_epoch():
    X, y = torch.randn(10, 5), torch.randint(0, 3, (10,))
    model = make_mlp()
    losses = []

    class BatchLosses(Callback):
        def on_batch_end(self, state):
            losses.append(state.loss * len(state.batch[0]))

    h = fit(model, (X, y), epochs=1, batch_size=4, shuffle=False,
            optimizer=lambda p: torch.optim.SGD(p, lr=0.0), callbacks=[BatchLosses()])
    assert h["train_loss"][0] == pytest.approx(float(sum(losses)) / 10)
    assert h["train_loss"][0] == pytest.approx(F.cross_entropy(model(X), y).item())


def test_history_append_aligns_keys_and_pickles():
    h = History()
    h.append({"epoch": 1, "a": 1.0})
    h.append({"epoch": 2, "b": 2.0})
    assert h["a"][0] == 1.0 and np.isnan(h["a"][1])
    assert np.isnan(h["b"][0]) and h["b"][1] == 2.0
    h.warnings.append("w")
    back = pickle.loads(pickle.dumps(h))
    assert isinstance(back, History) and back.warnings == ["w"]
    assert list(back) == list(h) and back["epoch"] == [1, 2] and back["a"][0] == 1.0
    assert "epochs=2" in repr(h)


def test_log_every_records_step_losses():
    _, h = train(epochs=2, batch_size=10, log_every=3)  # 9 steps per epoch
    assert h.steps["step"] == [3, 6, 9, 12, 15, 18]
    assert len(h.steps["train_loss"]) == 6 and all(np.isfinite(h.steps["train_loss"]))


def test_history_lives_in_its_own_module_and_train_re_exports_it():
    import coursekit.history
    assert History is coursekit.history.History


# --------------------------------------------------------------------------- fit against a plain loop

def hand_written_fit(model, train_data, val_data, *, epochs, batch_size, seed, scheduler=None,
                     per_step=False, clip_grad_norm=None, log_every=None, drop_last=False):
    """What fit computes, written out as a plain PyTorch loop: the same shuffling, the same
    sums on the device, read as float64 at the end of each epoch."""
    X, y = train_data
    optimizer = sgd(model.parameters())
    scheduler = scheduler(optimizer) if scheduler is not None else None
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    history, steps, step = {}, {"step": [], "train_loss": []}, 0
    for epoch in range(1, epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        order = torch.randperm(len(X), generator=generator)
        stop = len(X) - len(X) % batch_size if drop_last else len(X)
        loss_sum, count = 0.0, 0
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(X[idx]), y[idx])
            loss.backward()
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            if per_step:
                scheduler.step()
            loss_sum, count, step = loss_sum + loss.detach() * len(idx), count + len(idx), step + 1
            if log_every is not None and step % log_every == 0:
                steps["step"].append(step)
                steps["train_loss"].append(loss.item())
        row = {"epoch": epoch, "train_loss": loss_sum.double().item() / count}
        if val_data is not None:
            Xv, yv = val_data
            model.eval()
            with torch.no_grad():
                out = model(Xv)  # one validation batch (fewer than eval_batch_size samples)
            row["val_loss"] = (F.cross_entropy(out, yv) * len(Xv)).double().item() / len(Xv)
            row["val_acc"] = (accuracy(out, yv) * len(Xv)).double().item() / len(Xv)
        row["lr"] = lr
        if scheduler is not None and not per_step:
            scheduler.step()
        for key, value in row.items():
            history.setdefault(key, []).append(value)
    return history, steps if log_every is not None else {}


@pytest.mark.parametrize("options", [
    {},
    {"scheduler": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
     "clip_grad_norm": 0.5, "log_every": 4},
    {"scheduler": lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 / (1 + k)),
     "per_step": True, "drop_last": True, "log_every": 1, "no_validation": True},
], ids=["plain", "epoch-scheduler-clipping-log_every", "step-scheduler-drop_last-no-validation"])
def test_fit_equals_a_hand_written_loop_bit_for_bit(options):
    options = dict(options)
    Xt, yt, Xv, yv = make_data()
    val = None if options.pop("no_validation", False) else (Xv, yv)
    seed_everything(5)
    expected, expected_steps = hand_written_fit(make_mlp(dropout=0.2), (Xt, yt), val, epochs=3,
                                                batch_size=16, seed=3, **options)
    if options.pop("per_step", False):
        options["scheduler_interval"] = "step"
    seed_everything(5)
    h = fit(make_mlp(dropout=0.2), (Xt, yt), val, epochs=3, batch_size=16, seed=3, optimizer=sgd,
            **options)
    assert {k: v for k, v in h.items() if k != "time"} == expected   # ==: bit for bit, key order aside
    assert list(h) == [*expected, "time"]
    assert h.steps == expected_steps


def test_fit_options_mirror_the_keyword_arguments_of_fit():
    """One set of names and defaults: FitOptions is what fit checks and hands on."""
    keywords = {name: p.default for name, p in inspect.signature(fit).parameters.items()
                if p.kind is p.KEYWORD_ONLY}
    assert {f.name: f.default for f in dataclasses.fields(FitOptions)} == keywords
    options = FitOptions(epochs=3, quiet=True, progress=True)
    assert (options.epochs, options.quiet, options.progress) == (3, True, False)  # quiet: no bar
    with pytest.raises(ValueError, match="log_every must be a positive integer, got 0"):
        FitOptions(log_every=0)


# --------------------------------------------------------------------------- callbacks

class Recorder(Callback):
    def __init__(self, name, events):
        self.name, self.events = name, events

    def on_fit_start(self, state):
        self.events.append((self.name, "fit_start"))

    def on_epoch_start(self, state):
        self.events.append((self.name, "epoch_start", state.epoch))

    def on_batch_end(self, state):
        self.events.append((self.name, "batch", state.step))

    def on_epoch_end(self, state):
        self.events.append((self.name, "epoch_end", state.epoch))

    def on_fit_end(self, state):
        self.events.append((self.name, "fit_end"))


def test_callbacks_are_called_in_order():
    events = []
    X, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    fit(make_mlp(), (X, y), epochs=2, batch_size=10, callbacks=[Recorder("a", events), Recorder("b", events)])
    expected = [("a", "fit_start"), ("b", "fit_start")]
    step = 0
    for epoch in (1, 2):
        expected += [("a", "epoch_start", epoch), ("b", "epoch_start", epoch)]
        for _ in range(2):
            step += 1
            expected += [("a", "batch", step), ("b", "batch", step)]
        expected += [("a", "epoch_end", epoch), ("b", "epoch_end", epoch)]
    expected += [("a", "fit_end"), ("b", "fit_end")]
    assert events == expected


def test_built_in_callbacks_run_around_the_users_callbacks():
    """The scheduler steps before the callbacks: at the end of an epoch they see the next
    epoch's learning rate, after a step the next step's; the progress bar comes last and
    shows what they add."""
    seen = {"epoch_end": [], "batch_end": []}

    class Watch(Callback):
        def on_batch_end(self, state):
            seen["batch_end"].append(state.optimizer.param_groups[0]["lr"])

        def on_epoch_end(self, state):
            seen["epoch_end"].append(state.optimizer.param_groups[0]["lr"])
            return {"val_extra": 1.5}

    halve = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _, h = train(epochs=2, optimizer=lambda p: torch.optim.SGD(p, lr=1.0), scheduler=halve,
                 callbacks=[Watch()])
    assert h["lr"] == [1.0, 0.5] and seen["epoch_end"] == [0.5, 0.25]
    seen["batch_end"].clear()
    per_step = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 / (1 + k))
    train(epochs=1, optimizer=lambda p: torch.optim.SGD(p, lr=1.0), scheduler=per_step,
          scheduler_interval="step", callbacks=[Watch()])
    assert seen["batch_end"] == pytest.approx([1 / (1 + k) for k in range(1, 7)])  # 6 steps


def test_the_progress_bar_shows_callback_values_and_closes_on_an_exception(capfd, monkeypatch):
    closed = []
    close = ProgressBar.close
    monkeypatch.setattr(ProgressBar, "close", lambda self: (closed.append(self.bar is not None), close(self)))
    train(epochs=2, progress=True, callbacks=[lambda state: {"val_extra": 1.5}])
    out, err = capfd.readouterr()
    assert "val_extra=1.5" in out and "2/2" in out and err == ""
    assert closed[0] is True

    def fail(state):
        raise RuntimeError("a callback failed")

    closed.clear()
    with pytest.raises(RuntimeError, match="a callback failed"):
        train(epochs=2, progress=True, callbacks=[fail])
    assert closed == [True]  # the bar was open, and fit closed it


def test_a_callback_can_stop_training():
    def stop_at_two(state):
        if state.epoch == 2:
            state.stop_training = True

    _, h = train(epochs=10, callbacks=[stop_at_two])
    assert h["epoch"] == [1, 2]


def test_a_function_callback_adds_values_seen_by_later_callbacks():
    seen = []
    _, h = train(epochs=3, callbacks=[lambda s: {"w_norm": s.model[0].weight.norm().item()},
                                      lambda s: seen.append(s.logs["w_norm"])])
    assert h["w_norm"] == seen and len(seen) == 3


def test_augment_transforms_every_training_batch_and_never_the_validation_data():
    seen = []

    def augment(x, y):
        seen.append((x.clone(), y.clone()))
        return x + 100.0, y   # a shift the model would notice

    model, h = train(epochs=2, augment=augment)
    assert len(seen) == 2 * 6            # 90 training samples in batches of 16, twice
    assert sum(len(x) for x, _ in seen) == 2 * 90
    Xt, yt, Xv, yv = make_data()
    first_epoch = torch.cat([x for x, _ in seen[:6]])
    assert torch.equal(first_epoch.sort(dim=0).values, Xt.sort(dim=0).values)  # the training data, once
    # validation was computed on the raw inputs
    assert h["val_loss"][-1] == pytest.approx(evaluate(model, (Xv, yv))["loss"], rel=1e-6)
    _, plain = train(epochs=2)
    assert plain["val_loss"] != h["val_loss"]


def test_augment_may_return_soft_targets():
    from coursekit.regularization import mixup
    model, h = train(epochs=2, augment=lambda x, y: mixup(x, y, 3, alpha=0.4))
    assert len(h["val_acc"]) == 2 and all(0 <= a <= 1 for a in h["val_acc"])
    with pytest.raises(TypeError, match="augment must be a function"):
        train(epochs=1, augment="mixup")


def test_early_stopping_stops_and_restores_the_best_weights():
    scores = [5.0, 3.0, 1.0, 2.0, 4.0, 0.5, 0.1]  # best at epoch 3, then 2 epochs worse
    snapshots = {}

    def score(state):
        snapshots[state.epoch] = state.model[0].weight.detach().clone()
        return {"score": scores[state.epoch - 1]}

    stopper = EarlyStopping(monitor="score", patience=2, mode="min")
    model, h = train(epochs=7, callbacks=[score, stopper])
    assert h["epoch"] == [1, 2, 3, 4, 5]
    # best_epoch and stopped_epoch are 0-based step indices: epochs 3 and 5
    assert (stopper.best, stopper.best_epoch, stopper.stopped_epoch) == (1.0, 2, 4)
    assert_close(model[0].weight, snapshots[3])
    assert not torch.equal(snapshots[3], snapshots[5])


def test_early_stopping_on_an_unknown_key_names_the_recorded_ones():   # a ValueError, as in Keras
    with pytest.raises(ValueError, match="val_acc"):
        train(epochs=2, callbacks=[EarlyStopping(monitor="val_accuracy")])


def test_early_stopping_arguments_are_checked():
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="'up'"):
        EarlyStopping(mode="up")


# --------------------------------------------------------------------------- no host sync

def test_no_host_synchronization_inside_the_training_loop(monkeypatch):
    """Reading a tensor on the host (.item(), .tolist(), float(), bool(), ...) waits for
    the device; fit may do it a few times per epoch, never per step."""
    Xt, yt, Xv, yv = make_data(n=400)
    model = make_mlp()
    reads = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    epochs, batch_size = 3, 10  # 30 steps per epoch
    fit(model, (Xt, yt), (Xv, yv), epochs=epochs, batch_size=batch_size, optimizer=sgd,
        clip_grad_norm=1.0, train_metrics=True, log_every=5)
    monkeypatch.undo()
    assert 1 <= len(reads) <= 2 * epochs + 2, f"{len(reads)} host reads in {epochs} epochs: {reads}"


# --------------------------------------------------------------------------- options

@pytest.mark.parametrize("amp", ["bf16", True, "fp16"])
def test_mixed_precision_trains_on_cpu(amp):
    _, h = train(epochs=3, amp=amp, quiet=True)
    assert np.all(np.isfinite(h["train_loss"])) and h["train_loss"][-1] < h["train_loss"][0]


def test_compile_option_is_passed_to_torch_compile():
    _, h = train(epochs=2, compile={"backend": "eager"}, quiet=True)
    assert np.all(np.isfinite(h["train_loss"]))


def test_gradient_clipping_bounds_the_norm():
    norms = []

    class GradNorm(Callback):
        def on_batch_end(self, state):
            grads = [p.grad for p in state.model.parameters()]
            norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    Xt, yt, _, _ = make_data()
    fit(make_mlp(), (Xt * 100, yt), epochs=2, optimizer=sgd, clip_grad_norm=0.5, callbacks=[GradNorm()])
    assert max(norms) <= 0.5 * (1 + 1e-5)


def test_learning_rate_schedulers():
    step_lr = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    _, h = train(epochs=5, optimizer=lambda p: torch.optim.SGD(p, lr=1.0), scheduler=step_lr)
    assert h["lr"] == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    # per step: 90 samples / 16 = 6 steps per epoch
    per_step = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 / (1 + k))
    _, h = train(epochs=2, optimizer=lambda p: torch.optim.SGD(p, lr=1.0), scheduler=per_step,
                 scheduler_interval="step")
    assert h["lr"] == pytest.approx([1.0, 1 / 7])
    plateau = lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    _, h = train(epochs=4, optimizer=lambda p: torch.optim.SGD(p, lr=0.0), scheduler=plateau)
    assert h["lr"] == pytest.approx([0.0] * 4)  # lr 0: no improvement, halving 0 stays 0
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        train(epochs=1, scheduler=plateau, scheduler_interval="step")


def test_channels_last_for_a_cnn():
    X, y = torch.randn(24, 2, 8, 8), torch.randint(0, 3, (24,))
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    h = fit(model, (X, y), (X, y), epochs=2, batch_size=8, channels_last=True)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert np.all(np.isfinite(h["val_loss"]))


def test_default_optimizer_and_an_optimizer_instance():
    Xt, yt, _, _ = make_data()
    _, h = train(epochs=1, optimizer=None)
    assert h["lr"] == [1e-3]  # Adam's default
    model = make_mlp()
    before = model[0].weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    h = fit(model, (Xt, yt), epochs=1, optimizer=opt)
    assert h["lr"] == [0.05] and len(opt.state) == 4  # it was used: momentum buffers
    assert not torch.equal(model[0].weight, before)


# --------------------------------------------------------------------------- output and stderr

def test_progress_off_prints_nothing(capfd, monkeypatch):
    train(epochs=2, progress=False)
    monkeypatch.setenv("COURSEKIT_PROGRESS", "0")
    train(epochs=2)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_progress_bar_goes_to_stdout_never_stderr(capfd, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROGRESS", "1")
    train(epochs=2)
    out, err = capfd.readouterr()
    assert "2/2" in out and err == ""


def test_bad_progress_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROGRESS", "maybe")
    with pytest.raises(ValueError, match="COURSEKIT_PROGRESS.*'maybe'"):
        train(epochs=1)


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = make_mlp()

    def forward(self, x):
        warnings.warn("something odd in forward", UserWarning)
        return self.mlp(x)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_quiet_records_warnings_instead_of_printing_them(capfd, monkeypatch, how):
    Xt, yt, _, _ = make_data()
    if how == "environment":
        monkeypatch.setenv("COURSEKIT_QUIET", "1")
        monkeypatch.setenv("COURSEKIT_PROGRESS", "1")  # quiet wins over the progress bar
    h = fit(Noisy(), (Xt, yt), epochs=2, **({"quiet": True} if how == "argument" else {}))
    assert capfd.readouterr() == ("", "")
    assert h.warnings == ["UserWarning: something odd in forward"]


# --------------------------------------------------------------------------- evaluate, predict, accuracy

def test_evaluate_matches_a_direct_computation():
    Xt, yt, Xv, yv = make_data()
    model = make_mlp(dropout=0.5)
    model.train()
    result = evaluate(model, (Xv, yv), batch_size=7)
    assert model.training, "evaluate restores the mode"
    model.eval()
    with torch.no_grad():
        out = model(Xv)
    assert result["loss"] == pytest.approx(F.cross_entropy(out, yv).item(), rel=1e-6)
    assert result["acc"] == pytest.approx((out.argmax(1) == yv).float().mean().item())
    loader = DataLoader(TensorDataset(Xv, yv), batch_size=5)
    assert evaluate(model, loader) == pytest.approx(result)
    assert set(evaluate(model, (Xv, yv), metrics={})) == {"loss"}


def test_predict_returns_eval_mode_outputs_on_the_cpu():
    Xt, _, _, _ = make_data()
    model = make_mlp(dropout=0.5)
    out = predict(model, Xt, batch_size=16)
    assert out.shape == (len(Xt), 3) and out.device.type == "cpu"
    model.eval()
    assert_close(out, model(Xt).detach())
    assert_close(predict(model, DataLoader(TensorDataset(Xt), batch_size=8)), out)
    assert_close(predict(model, (Xt, torch.zeros(len(Xt)))), out)


def test_accuracy_for_indices_soft_labels_and_binary():
    out = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert_close(accuracy(out, torch.tensor([0, 1, 1])), torch.tensor(2 / 3))
    assert_close(accuracy(out, torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])), torch.tensor(2 / 3))
    assert_close(accuracy(torch.tensor([1.5, -0.5, 0.2]), torch.tensor([1.0, 0.0, 0.0])), torch.tensor(2 / 3))


# --------------------------------------------------------------------------- argument errors

@pytest.mark.parametrize("kwargs, error, match", [
    ({"epochs": 0}, ValueError, "epochs must be a positive integer, got 0"),
    ({"batch_size": -2}, ValueError, "batch_size must be a positive integer, got -2"),
    ({"amp": "fp8"}, ValueError, "'fp8'"),
    ({"scheduler_interval": "batch"}, ValueError, "'batch'"),
    ({"clip_grad_norm": 0.0}, ValueError, "clip_grad_norm"),
    ({"optimizer": "sgd"}, TypeError, "str"),
])
def test_fit_argument_errors_name_the_value(kwargs, error, match):
    Xt, yt, _, _ = make_data()
    with pytest.raises(error, match=match):
        fit(make_mlp(), (Xt, yt), **kwargs)


def test_fit_data_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(10, 5\) and \(9,\)"):
        fit(make_mlp(), (torch.randn(10, 5), torch.zeros(9, dtype=torch.long)))
    with pytest.raises(TypeError, match="single tensor"):
        fit(make_mlp(), torch.randn(10, 5))
    with pytest.raises(TypeError, match="3 item"):
        fit(make_mlp(), (torch.randn(10, 5), torch.zeros(10), torch.zeros(10)))


# --------------------------------------------------------------------------- several seeds

def test_fit_seeds_returns_all_histories_mean_and_std():
    Xt, yt, Xv, yv = make_data()
    runs = fit_seeds(make_mlp, (Xt, yt), (Xv, yv), seeds=[0, 1, 2], epochs=3, optimizer=sgd,
                     batch_size=16)
    assert isinstance(runs, SeedRuns) and len(runs.histories) == len(runs.models) == 3
    a = np.array([h["val_loss"] for h in runs.histories])  # (seeds, epochs)
    assert_close(np.array(runs.mean["val_loss"]), a.mean(0))
    assert_close(np.array(runs.std["val_loss"]), a.std(0, ddof=1))
    assert runs.stack("val_acc").shape == (3, 3)
    # each run is the run fit gives for that seed
    seed_everything(1)
    h1 = fit(make_mlp(), (Xt, yt), (Xv, yv), epochs=3, optimizer=sgd, batch_size=16, seed=1)
    assert_same_history(runs.histories[1], h1, rtol=0, atol=0)


def test_fit_seeds_pads_runs_stopped_early_with_nan():
    Xt, yt, _, _ = make_data()

    def stop(state):
        if state.epoch == 1 + len(stop.calls) % 2:
            state.stop_training = True
            stop.calls.append(state.epoch)

    stop.calls = []
    runs = fit_seeds(make_mlp, (Xt, yt), seeds=[0, 1], epochs=4, callbacks=[stop])
    a = runs.stack("train_loss")
    assert a.shape == (2, 2) and np.isnan(a[0, 1]) and not np.isnan(a[1, 1])
    assert runs.mean["train_loss"][1] == pytest.approx(a[1, 1])
    assert runs.std["train_loss"][1] == 0.0


def test_fit_seeds_argument_errors():
    Xt, yt, _, _ = make_data()
    model = make_mlp()
    with pytest.raises(TypeError, match="factory"):
        fit_seeds(make_mlp, (Xt, yt), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="seeds="):
        fit_seeds(make_mlp, (Xt, yt), seed=1)
    with pytest.raises(ValueError, match="empty"):
        fit_seeds(make_mlp, (Xt, yt), seeds=[])


def test_a_callback_can_freeze_batchnorm_in_eval_mode_and_evaluate_keeps_it():
    """on_epoch_start runs after model.train(): a layer put in eval mode there stays in eval
    mode for the epoch (its running statistics do not move), and evaluate/predict restore
    each submodule's own mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    bn = model[1]
    before = bn.running_mean.clone()

    class FreezeBN(Callback):
        def on_epoch_start(self, state):
            bn.eval()

    X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    fit(model, (X, y), epochs=2, batch_size=16, callbacks=[FreezeBN()], progress=False)
    torch.testing.assert_close(bn.running_mean, before, rtol=0, atol=0)

    model.train()
    bn.eval()
    evaluate(model, (X, y))
    predict(model, X)
    assert model.training and model[0].training and not bn.training
