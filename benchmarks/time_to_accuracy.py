"""Time to accuracy with ``coursekit.train.fit`` on a laptop-class CPU.

Two fixed recipes, each run over several seeds:

- MNIST-1D (Greydanus 2020; its paper reports 94 % test accuracy for a CNN): a small 1D CNN
  with batch normalization; goal >= 90 % test accuracy in <= 60 s on 2 CPU cores;
- scikit-learn digits: an MLP with dropout and label smoothing; goal >= 97 % test accuracy.

Each run trains for a fixed number of epochs (no early stopping, the test set is touched
once, at the end) and reports the wall-clock seconds of ``fit`` (validation after every
epoch included), the test accuracy, and the seconds until the *validation* accuracy first
reached the goal. The summary gives the median time and the accuracy over the runs.

Usage::

    python benchmarks/time_to_accuracy.py             # 10 runs per task, about 20 s
    python benchmarks/time_to_accuracy.py --runs 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from coursekit.data import load_mnist1d, load_sklearn
from coursekit.scaling import StandardScaler
from coursekit.train import default_device, evaluate, fit, seed_everything

from hardware import hardware  # benchmarks/hardware.py


def mnist1d_cnn(channels: int = 32) -> nn.Module:
    """Three strided convolutions with BatchNorm, then a linear classifier."""
    def block(c_in, kernel):
        return [nn.Conv1d(c_in, channels, kernel, stride=2, padding=1), nn.BatchNorm1d(channels), nn.ReLU()]

    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),              # (N, 40) -> (N, 1, 40)
        *block(1, 5),                          # (N, C, 19)
        *block(channels, 3),                   # (N, C, 10)
        *block(channels, 3),                   # (N, C, 5)
        nn.Flatten(),                          # (N, C * 5)
        nn.Linear(channels * 5, 10))


def digits_mlp(width: int = 256, dropout: float = 0.2) -> nn.Module:
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(width, 10))


def one_cycle(lr: float, weight_decay: float, epochs: int, steps_per_epoch: int) -> dict:
    """fit arguments for AdamW with a one-cycle learning-rate schedule, stepped every step."""
    return {
        "optimizer": lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=weight_decay),
        "scheduler": lambda opt: torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=epochs * steps_per_epoch),
        "scheduler_interval": "step",
    }


def tasks():
    """``(name, goal, recipe text, data, make_model, fit kwargs)`` of each task."""
    m = load_mnist1d()
    epochs, batch = 15, 128
    yield ("MNIST-1D", 0.90,
           f"1D CNN (3 conv layers, 32 channels, BatchNorm), AdamW lr 1e-2 wd 1e-2, one-cycle, "
           f"batch {batch}, {epochs} epochs, {len(m.X_train)} train / {len(m.X_val)} val / "
           f"{len(m.X_test)} test",
           ((m.X_train, m.y_train), (m.X_val, m.y_val), (m.X_test, m.y_test)), mnist1d_cnn,
           {"epochs": epochs, "batch_size": batch,
            **one_cycle(1e-2, 1e-2, epochs, -(-len(m.X_train) // batch))})

    d = load_sklearn("digits")
    scaler = StandardScaler().fit(d.X_train)  # fitted on the training split only
    epochs, batch = 30, 64
    yield ("digits", 0.97,
           f"MLP 64-256-256-10, dropout 0.2, label smoothing 0.1, AdamW lr 3e-3 wd 1e-2, one-cycle, "
           f"batch {batch}, {epochs} epochs, {len(d.X_train)} train / {len(d.X_val)} val / "
           f"{len(d.X_test)} test, standardized",
           ((scaler.transform(d.X_train), d.y_train), (scaler.transform(d.X_val), d.y_val),
            (scaler.transform(d.X_test), d.y_test)), digits_mlp,
           {"epochs": epochs, "batch_size": batch, "loss_fn": nn.CrossEntropyLoss(label_smoothing=0.1),
            **one_cycle(3e-3, 1e-2, epochs, -(-len(d.X_train) // batch))})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs (seeds 0, 1, ...) per task (default 10)")
    parser.add_argument("--device", default=None, help="default: coursekit.train.default_device()")
    args = parser.parse_args()
    device = default_device(args.device)
    print(f"hardware: {hardware(device)}")
    all_met = True
    for name, goal, recipe, (train, val, test), make_model, kwargs in tasks():
        print(f"\n{name}: {recipe}")
        seconds, accuracies, to_goal = [], [], []
        for seed in range(args.runs):
            seed_everything(seed)
            model = make_model()
            start = time.perf_counter()
            history = fit(model, train, val, seed=seed, device=device, progress=False, **kwargs)
            seconds.append(time.perf_counter() - start)
            accuracies.append(evaluate(model, test)["acc"])
            reached = [t for t, a in zip(history["time"], history["val_acc"]) if a >= goal]
            to_goal.append(reached[0] if reached else float("nan"))
            print(f"  seed {seed}: {seconds[-1]:5.2f} s, test accuracy {100 * accuracies[-1]:.2f} %, "
                  f"val accuracy >= {100 * goal:.0f} % after "
                  + (f"{to_goal[-1]:.2f} s" if reached else "never"))
        n_met = sum(a >= goal for a in accuracies)
        std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        met = n_met == len(accuracies) and statistics.median(seconds) <= 60
        all_met &= met
        print(f"  {name} summary over {args.runs} runs: median {statistics.median(seconds):.2f} s "
              f"(min {min(seconds):.2f}, max {max(seconds):.2f}); test accuracy mean "
              f"{100 * statistics.mean(accuracies):.2f} ± {100 * std:.2f} %, "
              f"min {100 * min(accuracies):.2f} %; "
              f"{n_met}/{len(accuracies)} runs >= {100 * goal:.0f} %; median time to {100 * goal:.0f} % val "
              f"{statistics.median(to_goal):.2f} s; goal {'met' if met else 'NOT met'}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
