"""Tests of coursekit.multiprocess.run_processes: results by rank, collectives, SyncBatchNorm
against BatchNorm on the whole batch, and errors that name the failing rank."""
from __future__ import annotations

import multiprocessing
import os
import time

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.testing import assert_close

from coursekit.distributed import SyncBatchNorm
from coursekit.multiprocess import free_port, run_processes

pytestmark = [pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                 reason="run_processes needs the fork start method"),
              pytest.mark.slow]   # several processes: `make test-fast` leaves these out


def test_results_come_back_by_rank_and_collectives_work():
    def total(rank, world_size, x):
        t = x[rank].clone()
        dist.all_reduce(t)
        return rank, world_size, dist.get_rank(), t

    results = run_processes(total, 3, torch.tensor([1.0, 2.0, 4.0]))
    assert [r[:3] for r in results] == [(0, 3, 0), (1, 3, 1), (2, 3, 2)]
    for r in results:
        assert_close(r[3], torch.tensor(7.0))


def test_a_function_defined_in_a_closure_works():
    offset = 10  # a local variable: only fork can hand this function to the children

    def add(rank, world_size):
        return rank + offset

    assert run_processes(add) == [10, 11]


def test_a_single_process_is_a_group_of_one():
    assert run_processes(lambda rank, world_size: dist.get_world_size(), 1) == [1]


def test_sync_batchnorm_over_two_halves_equals_batchnorm_on_the_whole_batch():
    torch.manual_seed(0)
    x = torch.randn(8, 3, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64) + 2

    def half(rank, world_size, x):
        share = x.chunk(world_size)[rank].clone().requires_grad_()
        bn = SyncBatchNorm(3).double().train()
        y = bn(share)
        (y * torch.arange(1.0, 4.0, dtype=torch.float64)).sum().backward()
        return y.detach(), share.grad, bn.running_mean, bn.running_var

    results = run_processes(half, 2, x)
    whole = x.clone().requires_grad_()
    bn = nn.BatchNorm1d(3).double().train()
    y = bn(whole)
    (y * torch.arange(1.0, 4.0, dtype=torch.float64)).sum().backward()
    assert_close(torch.cat([r[0] for r in results]), y.detach())
    assert_close(torch.cat([r[1] for r in results]), whole.grad)
    for r in results:
        assert_close(r[2], bn.running_mean)
        assert_close(r[3], bn.running_var)


def test_output_of_the_children_does_not_reach_the_parent(capfd):
    def chatty(rank, world_size):
        print(f"stdout of rank {rank}", flush=True)
        os.write(2, b"raw stderr\n")  # as C++ code (gloo's logs) would
        return rank

    assert run_processes(chatty) == [0, 1]
    out, err = capfd.readouterr()
    assert "rank" not in out and "raw stderr" not in err


def test_an_error_names_the_rank_its_message_and_its_output():
    def fails_on_rank_1(rank, world_size):
        print(f"rank {rank} starts")
        if rank == 1:
            raise ValueError("the batch has 3 samples, expected 4")
        dist.barrier()  # rank 0 waits for rank 1, which never comes

    with pytest.raises(RuntimeError) as info:
        run_processes(fails_on_rank_1, 2, timeout=30)
    message = str(info.value)
    assert message.startswith("rank 1 of 2 raised ValueError: the batch has 3 samples, expected 4")
    assert "rank 1 starts" in message  # the tail of its output


def test_a_rank_that_dies_is_reported_with_its_exit_code():
    def dies(rank, world_size):
        if rank == 1:
            os._exit(3)
        time.sleep(30)  # rank 0 would outlive the test: run_processes must stop it

    with pytest.raises(RuntimeError, match=r"rank 1 of 2 exited with code 3 without a result"):
        run_processes(dies, 2, timeout=30)


def test_a_rank_that_does_not_finish_raises_a_timeout():
    with pytest.raises(TimeoutError, match=r"rank\(s\) \[0\] of 2 did not finish within timeout=1 s"):
        run_processes(lambda rank, world_size: time.sleep(30 if rank == 0 else 0), 2, timeout=1)


def test_an_unpicklable_result_is_an_error_of_its_rank():
    with pytest.raises(RuntimeError, match=r"rank \d of 2 raised .*pickle"):
        run_processes(lambda rank, world_size: (lambda: rank))


@pytest.mark.parametrize("kwargs, message", [
    (dict(world_size=0), r"world_size must be a positive integer, got 0"),
    (dict(world_size=2.0), r"world_size must be a positive integer, got 2\.0"),
    (dict(timeout=0), r"timeout must be a positive number of seconds, got 0"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_processes(lambda rank, world_size: rank, **kwargs)


def test_refuses_to_run_inside_a_process_group():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match=r"already in a process group \(rank 0 of 1\)"):
            run_processes(lambda rank, world_size: rank)
    finally:
        dist.destroy_process_group()
