"""Data-parallel training on CPU: 2 processes launched by torchrun with the gloo backend.

One launch (module fixture, a few seconds) runs tests/ddp_worker.py; the tests compare
what each process saved with single-process training on the full batch, where the two
must agree: plain SGD without BatchNorm, and BatchNorm made synchronous.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from coursekit.train import SyncBatchNorm, convert_sync_batchnorm, fit

pytestmark = pytest.mark.slow   # see pyproject.toml's markers: `make test-fast` leaves these out

WORKER = Path(__file__).with_name("ddp_worker.py")
spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Launch the worker on 2 CPU processes; return what each rank saved."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "COURSEKIT_DEVICE": "cpu", "COURSEKIT_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    # --standalone: a rendezvous on localhost with a free port chosen by the OS
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers
        log, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in 120 s:\n{log[-3000:]}")
    assert proc.returncode == 0, f"torchrun failed with code {proc.returncode}:\n{log[-3000:]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def single_process(make_model, **kwargs):
    """The same training in this process, on the global batch of 2 x 8 samples."""
    train_data, val_data = worker.make_data()
    model = make_model()
    history = fit(model, train_data, val_data, epochs=3, batch_size=2 * worker.BATCH,
                  optimizer=worker.sgd, seed=0, progress=False, distributed=False, **kwargs)
    return model, history


def test_two_processes_ran(ranks):
    assert [r["world_size"] for r in ranks] == [2, 2]


@pytest.mark.parametrize("case, make_model", [("mlp", worker.make_mlp), ("bn_sync", worker.make_bn_mlp)])
def test_ddp_equals_single_process_on_the_full_batch(ranks, case, make_model):
    model, history = single_process(make_model)
    for r in ranks:
        for key, value in model.state_dict().items():
            assert_close(r[case]["state"][key], value, msg=lambda m: f"{case} {key}: {m}")
        for key in ("train_loss", "val_loss", "val_acc"):
            assert_close(torch.tensor(r[case]["history"][key]), torch.tensor(history[key]),
                         msg=lambda m: f"{case} history {key}: {m}")


def test_history_is_the_same_on_every_process(ranks):
    for key in ("train_loss", "val_loss", "val_acc"):
        assert_close(torch.tensor(ranks[0]["mlp"]["history"][key]),
                     torch.tensor(ranks[1]["mlp"]["history"][key]), rtol=0, atol=0)


def test_sync_batchnorm_over_2x16_equals_batchnorm_over_32(ranks):
    assert ranks[0]["sync_bn_step"]["bn_type"] == "SyncBatchNorm"
    model = worker.make_bn_layer()  # plain BatchNorm1d, the whole batch in one process
    x, t = worker.make_bn_batch()
    x.requires_grad_(True)
    out = model(x)
    ((out - t) ** 2).mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    for r in ranks:
        s = r["sync_bn_step"]
        rows = s["rows"]
        assert_close(s["out"], out.detach()[rows])
        # each process's input gradient is that of the *sum* of the 2 processes' losses
        assert_close(s["x_grad"] / 2, x.grad[rows])
        for name, g in grads.items():
            assert_close(s["grads"][name], g, msg=lambda m: f"grad of {name}: {m}")
        for key, value in model.state_dict().items():
            assert_close(s["state"][key], value, msg=lambda m: f"{key} after the step: {m}")


def test_sync_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3).double()
    sync = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3).double()))[0]
    assert isinstance(sync, SyncBatchNorm)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    assert_close(sync(x), bn(x))
    assert_close(sync.running_var, bn.running_var)
    sync.eval(), bn.eval()
    assert_close(sync(x), bn(x))


def test_convert_sync_batchnorm_shares_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.BatchNorm1d(4)))
    weight, running_mean = model[1].weight, model[1].running_mean
    converted = convert_sync_batchnorm(model)
    assert converted is model
    assert isinstance(model[1], SyncBatchNorm) and isinstance(model[2][0], SyncBatchNorm)
    assert model[1].weight is weight and model[1].running_mean is running_mean


def test_sync_batchnorm_rejects_1d_input():
    with pytest.raises(ValueError, match="got 1D input"):
        SyncBatchNorm(4)(torch.randn(4))
