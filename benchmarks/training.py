"""Benchmark: ``coursekit.train.fit`` against a bare PyTorch loop and a ``DataLoader`` loop.

The three train the same model (same initial weights), on the same data, with the same
seed, interleaved in one process (round after round, the order rotating), and evaluate on
the validation set after each epoch:

- ``bare``: the hand-written loop a careful person writes: data on the device, batches by
  ``torch.randperm`` + ``index_select``, losses summed on the device, one read per epoch;
- ``fit``: ``coursekit.train.fit`` with the same optimizer and seed;
- ``dataloader``: ``DataLoader(TensorDataset(X, y), shuffle=True)``, the textbook loop.

Checks that ``bare`` and ``fit`` give *identical* losses and weights (bit for bit; exit
code 1 if not), prints the median per-epoch time of each over the rounds, the batching
cost alone, and, as the last line, ``fit/bare=<ratio> dataloader/fit=<ratio>``.
With CUDA it also reports samples/s of ``fit`` against a naive loop (``DataLoader`` and a
``.item()`` per step) and counts host synchronizations during ``fit`` with
``torch.cuda.set_sync_debug_mode``.

Usage::

    python benchmarks/training.py                      # MNIST-1D, MLP 40-100-100-10, batch 128
    python benchmarks/training.py --batch-size 64 --hidden 256 --rounds 9
    COURSEKIT_DEVICE=cuda python benchmarks/training.py
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from coursekit.data import load_mnist1d
from coursekit.train import default_device, fit, seed_everything

from hardware import hardware  # benchmarks/hardware.py

SEED = 0
LR, MOMENTUM = 0.05, 0.9
EVAL_BATCH = 1024  # fit's default eval_batch_size: the same validation batches


def make_model(hidden: int, depth: int) -> nn.Module:
    seed_everything(SEED)
    layers, width = [], 40
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 10))


def make_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def validation_sums(model, Xv, yv):
    """Summed loss and correct predictions on the validation set (as fit computes them)."""
    model.eval()
    loss_sum, correct = 0.0, 0.0
    for i in range(0, len(Xv), EVAL_BATCH):
        xb, yb = Xv[i:i + EVAL_BATCH], yv[i:i + EVAL_BATCH]
        out = model(xb)
        loss_sum = loss_sum + F.cross_entropy(out, yb) * len(xb)
        correct = correct + (out.argmax(dim=1) == yb).float().mean() * len(xb)
    return loss_sum, correct


def bare_loop(model, data, epochs, batch_size, device):
    """The hand-written loop: returns the per-epoch (train loss, val loss, val acc)."""
    X, y, Xv, yv = data
    optimizer = make_optimizer(model.parameters())
    seed_everything(SEED)
    generator = torch.Generator().manual_seed(SEED)
    history = []
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(X), generator=generator).to(device, non_blocking=True)
        loss_sum = 0.0
        for i in range(0, len(X), batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = X.index_select(0, idx), y.index_select(0, idx)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            loss_sum = loss_sum + loss.detach() * len(idx)
        val_loss, correct = validation_sums(model, Xv, yv)
        train_sum, val_sum, val_correct = torch.stack(
            [torch.as_tensor(v).double() for v in (loss_sum, val_loss, correct)]).tolist()
        history.append((train_sum / len(X), val_sum / len(Xv), val_correct / len(Xv)))
    return history


def fit_loop(model, data, epochs, batch_size, device):
    X, y, Xv, yv = data
    h = fit(model, (X, y), (Xv, yv), epochs=epochs, batch_size=batch_size, optimizer=make_optimizer,
            seed=SEED, device=device, progress=False)
    return list(zip(h["train_loss"], h["val_loss"], h["val_acc"]))


def dataloader_loop(model, data, epochs, batch_size, device, host_data):
    """The textbook loop: DataLoader(TensorDataset) over host tensors, batches moved to the device."""
    _, _, Xv, yv = data
    X_host, y_host = host_data
    optimizer = make_optimizer(model.parameters())
    seed_everything(SEED)
    loader = DataLoader(TensorDataset(X_host, y_host), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(SEED),
                        pin_memory=device.type == "cuda")
    history = []
    for _ in range(epochs):
        model.train()
        loss_sum = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            loss_sum = loss_sum + loss.detach() * len(xb)
        val_loss, correct = validation_sums(model, Xv, yv)
        train_sum, val_sum, val_correct = torch.stack(
            [torch.as_tensor(v).double() for v in (loss_sum, val_loss, correct)]).tolist()
        history.append((train_sum / len(X_host), val_sum / len(Xv), val_correct / len(Xv)))
    return history


def naive_loop(model, host_data, epochs, batch_size, device):
    """What a first GPU port often looks like: DataLoader, and a .item() at every step."""
    X_host, y_host = host_data
    optimizer = make_optimizer(model.parameters())
    loader = DataLoader(TensorDataset(X_host, y_host), batch_size=batch_size, shuffle=True)
    for _ in range(epochs):
        model.train()
        total = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)


def batching_cost(X, y, X_host, y_host, batch_size, device, repeats=7) -> dict[str, float]:
    """Median seconds to produce one epoch of batches, without any training."""
    g = torch.Generator().manual_seed(SEED)
    times = {"index_select": [], "fancy indexing": [], "dataloader": []}
    for _ in range(repeats):
        for name in times:
            sync(device)
            start = time.perf_counter()
            if name == "dataloader":
                for xb, yb in DataLoader(TensorDataset(X_host, y_host), batch_size=batch_size,
                                         shuffle=True, generator=g):
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            else:
                perm = torch.randperm(len(X), generator=g).to(device)
                for i in range(0, len(X), batch_size):
                    idx = perm[i:i + batch_size]
                    if name == "index_select":
                        xb, yb = X.index_select(0, idx), y.index_select(0, idx)
                    else:
                        xb, yb = X[idx], y[idx]
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def count_host_syncs(args, data, device) -> tuple[int, int]:
    """Host synchronizations during a fit on CUDA, and the number of optimizer steps."""
    model = make_model(args.hidden, args.depth).to(device)
    X, y, Xv, yv = data
    epochs = 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fit(model, (X, y), (Xv, yv), epochs=epochs, batch_size=args.batch_size,
                optimizer=make_optimizer, seed=SEED, device=device, progress=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    steps = epochs * -(-len(X) // args.batch_size)
    return syncs, steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--rounds", type=int, default=25, help="timed rounds, after one warm-up (default 25)")
    parser.add_argument("--batch-size", type=int, default=128, help="default 128")
    parser.add_argument("--hidden", type=int, default=100, help="width of the hidden layers (default 100)")
    parser.add_argument("--depth", type=int, default=2, help="number of hidden layers (default 2)")
    parser.add_argument("--device", default=None, help="default: coursekit.train.default_device()")
    args = parser.parse_args()
    device = default_device(args.device)

    splits = load_mnist1d()
    host_data = (splits.X_train, splits.y_train)
    data = tuple(t.to(device) for t in (splits.X_train, splits.y_train, splits.X_val, splits.y_val))
    print(f"hardware: {hardware(device)}")
    print(f"task: MNIST-1D, {len(splits.X_train)} train / {len(splits.X_val)} val samples; MLP "
          f"40-{'-'.join([str(args.hidden)] * args.depth)}-10; SGD lr={LR} momentum={MOMENTUM}; "
          f"batch {args.batch_size}; {args.epochs} epochs per run; {args.rounds} rounds + 1 warm-up, "
          f"interleaved; validation after every epoch")

    methods = {
        "bare": lambda m: bare_loop(m, data, args.epochs, args.batch_size, device),
        "fit": lambda m: fit_loop(m, data, args.epochs, args.batch_size, device),
        "dataloader": lambda m: dataloader_loop(m, data, args.epochs, args.batch_size, device, host_data),
    }
    per_epoch = {name: [] for name in methods}
    results, models = {}, {}
    names = list(methods)
    for round_ in range(args.rounds + 1):
        order = names[round_ % len(names):] + names[:round_ % len(names)]  # rotate the order
        for name in order:
            model = make_model(args.hidden, args.depth).to(device)
            sync(device)
            start = time.perf_counter()
            results[name] = methods[name](model)
            sync(device)
            if round_ > 0:  # round 0 warms up
                per_epoch[name].append((time.perf_counter() - start) / args.epochs)
            models[name] = model

    identical = results["bare"] == results["fit"] and all(
        torch.equal(p, q) for p, q in zip(models["bare"].parameters(), models["fit"].parameters()))
    print(f"bare loop and fit: losses and weights identical: {'yes' if identical else 'NO'}")
    for epoch, (b, f) in enumerate(zip(results["bare"], results["fit"]), 1):
        print(f"  epoch {epoch}: train_loss {b[0]:.6f} / {f[0]:.6f}   val_loss {b[1]:.6f} / {f[1]:.6f}"
              f"   val_acc {b[2]:.4f} / {f[2]:.4f}   (bare / fit)")
    dl_last = results["dataloader"][-1]
    print(f"  dataloader loop, last epoch: train_loss {dl_last[0]:.6f} val_loss {dl_last[1]:.6f} "
          f"val_acc {dl_last[2]:.4f} (other shuffling, so not identical)")

    medians = {name: statistics.median(t) for name, t in per_epoch.items()}
    for name, t in per_epoch.items():
        print(f"{name:>10}: median {medians[name] * 1e3:8.2f} ms/epoch "
              f"(min {min(t) * 1e3:.2f}, max {max(t) * 1e3:.2f}, {len(t)} runs)")
    cost = batching_cost(*data[:2], *host_data, args.batch_size, device)
    print("batching alone, one epoch: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in cost.items())
          + f"  (dataloader/index_select = {cost['dataloader'] / cost['index_select']:.1f}, "
          f"fancy/index_select = {cost['fancy indexing'] / cost['index_select']:.1f})")

    if device.type == "cuda":  # training only (no validation) for both, median of 3 runs
        samples = len(host_data[0]) * args.epochs
        rates = {"fit": [], "naive": []}
        for _ in range(3):
            for name in rates:
                model = make_model(args.hidden, args.depth).to(device)
                sync(device)
                start = time.perf_counter()
                if name == "fit":
                    fit(model, data[:2], epochs=args.epochs, batch_size=args.batch_size,
                        optimizer=make_optimizer, seed=SEED, device=device, progress=False)
                else:
                    naive_loop(model, host_data, args.epochs, args.batch_size, device)
                sync(device)
                rates[name].append(samples / (time.perf_counter() - start))
        fast, naive = (statistics.median(rates[k]) for k in ("fit", "naive"))
        print(f"samples/s on {device}: fit {fast:,.0f}, naive loop {naive:,.0f} ({fast / naive:.1f}x)")
        syncs, steps = count_host_syncs(args, data, device)
        ok = syncs <= 4 * 2 + 4  # a few per epoch (the epoch's read, the shuffle), never per step
        print(f"host synchronizations during fit: {syncs} in 2 epochs of {steps // 2} steps each "
              f"({'none per step' if ok else 'TOO MANY: a sync per step?'})")

    paired = [f / b for f, b in zip(per_epoch["fit"], per_epoch["bare"])]
    print(f"fit/bare per round (paired, same round): median {statistics.median(paired):.3f}, "
          f"min {min(paired):.3f}, max {max(paired):.3f}")
    fit_bare = medians["fit"] / medians["bare"]
    dataloader_fit = medians["dataloader"] / medians["fit"]
    print(f"goals: fit/bare <= 1.02 {'met' if fit_bare <= 1.02 else 'NOT met'}; "
          f"dataloader/fit >= 4 {'met' if dataloader_fit >= 4 else 'NOT met'}")
    print(f"fit/bare={fit_bare:.3f} dataloader/fit={dataloader_fit:.2f}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
