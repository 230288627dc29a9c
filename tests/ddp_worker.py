"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node 2`` (CPU, gloo).

Each process trains with coursekit.train in data parallel (fit joins the process group
that torchrun describes) and saves what it sees to ``<out>/rank<r>.pt``; the test compares
that with single-process training on the full batch. The models and data are built here
and in the test by the same functions, so both start from the same weights.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from coursekit.train import convert_sync_batchnorm, fit, seed_everything

BATCH = 8  # per process: the global batch is 16


def make_data():
    """96 training and 20 validation samples, 6 features, 3 classes, float64."""
    g = torch.Generator().manual_seed(123)
    X = torch.randn(116, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (116,), generator=g)
    return (X[:96], y[:96]), (X[96:], y[96:])


def make_mlp() -> nn.Module:
    seed_everything(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def make_bn_mlp() -> nn.Module:
    seed_everything(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).double()


def make_bn_layer() -> nn.Module:
    seed_everything(1)
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4)).double()


def make_bn_batch():
    """A global batch of 32 samples and regression targets, float64."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(32, 5, generator=g, dtype=torch.float64)
    return x, torch.randn(32, 4, generator=g, dtype=torch.float64)


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def train(make_model, **kwargs):
    train_data, val_data = make_data()
    model = make_model()
    history = fit(model, train_data, val_data, epochs=3, batch_size=BATCH, optimizer=sgd, seed=0,
                  progress=False, **kwargs)
    return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "history": dict(history)}


def sync_bn_step(rank: int, world_size: int) -> dict:
    """One SGD step of Linear + SyncBatchNorm on this process's 16 of the 32 samples."""
    model = convert_sync_batchnorm(make_bn_layer())
    ddp = nn.parallel.DistributedDataParallel(model)
    x_all, t_all = make_bn_batch()
    rows = slice(rank * 16, (rank + 1) * 16)
    x, t = x_all[rows].clone().requires_grad_(True), t_all[rows]
    out = ddp(x)
    loss = ((out - t) ** 2).mean()  # DDP averages the gradients: the mean over all 32 samples
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    return {"rows": rows, "out": out.detach(), "x_grad": x.grad.clone(), "grads": grads,
            "state": {k: v.clone() for k, v in model.state_dict().items()},
            "bn_type": type(model[1]).__name__}


def main() -> None:
    out = Path(sys.argv[1])
    results = {"mlp": train(make_mlp), "bn_sync": train(make_bn_mlp, sync_batchnorm=True)}
    rank, world_size = dist.get_rank(), dist.get_world_size()
    results["world_size"] = world_size
    results["sync_bn_step"] = sync_bn_step(rank, world_size)
    torch.save(results, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
