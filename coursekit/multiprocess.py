"""Run a function in several processes joined by ``torch.distributed`` (gloo), from a notebook.

Training on several GPUs is launched with ``torchrun`` from a script (see
:mod:`coursekit.distributed`). To *show* what happens across processes inside a notebook,
:func:`run_processes` starts ``world_size`` CPU processes on this machine, joins them in a
gloo process group on a free localhost port, calls ``fn(rank, world_size, *args)`` in each,
and returns what each rank returned::

    >>> def total(rank, world_size, x):
    ...     t = x[rank].clone()
    ...     torch.distributed.all_reduce(t)         # sums over the processes
    ...     return t
    >>> run_processes(total, 2, torch.tensor([1.0, 2.0]))
    [tensor(3.), tensor(3.)]

The processes are started with the ``fork`` start method, so ``fn`` may be defined in the
notebook itself (``spawn`` would need it importable from a module). ``fork`` exists on
Linux and macOS, not on Windows. A forked child is a copy of the parent at the moment of
the fork: keep ``fn`` to tensor work and collectives; do not use a GPU in it (CUDA cannot be
re-initialized in a forked child) nor anything that holds threads or locks.

Each child runs single-threaded (``torch.set_num_threads(1)``), and its stdout and stderr
(including C++ log lines of gloo) are captured: they never reach the notebook, and the tail
of what a failing rank printed is part of the error raised in the parent.
"""
from __future__ import annotations

import datetime
import os
import pickle
import queue
import socket
import sys
import tempfile
import time
import traceback
import warnings
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from coursekit.validate import positive_int, positive_number

__all__ = ["run_processes", "free_port"]

_TAIL = 2000  # characters of a failing rank's captured output quoted in the error


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now (the OS picks it; it may be taken again later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _child(fn: Callable, rank: int, world_size: int, args: tuple, init_method: str,
           timeout: float, results, log_path: str) -> None:
    """Body of one process: capture its output, join the group, run ``fn``, send the result.

    The result (or the error) is sent *before* the group is destroyed: when a rank fails,
    its own error reaches the parent before the errors it causes in the other ranks."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    os.dup2(log, 1)  # the file descriptors themselves: C++ output (gloo's logs) goes there too
    os.dup2(log, 2)
    os.close(log)
    # and Python's streams, which a notebook kernel (or pytest) has replaced by its own objects
    sys.stdout = open(1, "w", buffering=1, errors="replace", closefd=False)
    sys.stderr = open(2, "w", buffering=1, errors="replace", closefd=False)
    joined = False
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout))
        joined = True
        result = fn(rank, world_size, *args)
        payload = ("ok", rank, pickle.dumps(result))  # plain pickle: tensors travel by value
    except BaseException as error:  # noqa: BLE001 - reported to the parent, whatever it is
        payload = ("error", rank, f"{type(error).__name__}: {error}", traceback.format_exc())
    sys.stdout.flush()  # before the parent, told of an error, reads the output
    sys.stderr.flush()
    results.put(payload)
    if joined:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - the result is sent; nothing is left to report
            pass


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    text = text.strip()
    return text if len(text) <= _TAIL else "..." + text[-_TAIL:]


def run_processes(fn: Callable[..., Any], world_size: int = 2, *args: Any,
                  timeout: float = 60) -> list[Any]:
    r"""Call ``fn(rank, world_size, *args)`` in ``world_size`` forked CPU processes joined in a
    gloo process group, and return their results, ordered by rank.

    Inside ``fn``, ``torch.distributed`` is initialized (``dist.get_rank()`` is ``rank``), so
    collectives (``all_reduce``, ...), DDP and :class:`coursekit.distributed.SyncBatchNorm`
    work as under ``torchrun``. The group is destroyed when ``fn`` returns.

    Args:
        fn: the function to run; defined anywhere, a notebook cell included. Its result must
            be picklable (tensors are).
        world_size: the number of processes. Default: 2.
        *args: passed to ``fn`` after ``rank`` and ``world_size`` (copied into each process
            by the fork; changes made to them in a child do not come back).
        timeout: seconds to wait for all processes, and the timeout of the process group's
            collectives. Default: 60.

    Returns:
        ``[result of rank 0, result of rank 1, ...]``.

    Raises:
        ValueError: for a ``world_size`` below 1 or a non-positive ``timeout``.
        RuntimeError: if this process is already in a process group, if the platform cannot
            fork, or if a rank raised or died; the message names the rank, its error and the
            tail of its output.
        TimeoutError: if some rank did not finish within ``timeout`` seconds.
    """
    positive_int(world_size, "world_size")
    positive_number(timeout, "timeout", what="a positive number of seconds")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if not dist.is_available():
        raise RuntimeError("run_processes needs torch.distributed, which this PyTorch build lacks")
    if dist.is_initialized():
        raise RuntimeError(f"this process is already in a process group (rank {dist.get_rank()} "
                           f"of {dist.get_world_size()}); run_processes starts its own")
    try:
        ctx = mp.get_context("fork")
    except ValueError:
        raise RuntimeError("run_processes needs the 'fork' start method, which this platform "
                           "lacks (Windows); launch a script with torchrun instead") from None

    init_method = f"tcp://127.0.0.1:{free_port()}"
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="coursekit-mp-") as logs:
        log_paths = [os.path.join(logs, f"rank{r}.log") for r in range(world_size)]
        processes = [ctx.Process(target=_child, name=f"coursekit-rank{r}", daemon=True,
                                 args=(fn, r, world_size, args, init_method, timeout, results,
                                       log_paths[r]))
                     for r in range(world_size)]
        with warnings.catch_warnings():
            # Python >= 3.12 warns that forking a multi-threaded process (a Jupyter kernel
            # is one) may deadlock; the children only run fn and gloo, as documented above.
            warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks",
                                    category=DeprecationWarning)
            for p in processes:
                p.start()
        try:
            return _collect(processes, results, world_size, timeout, log_paths)
        finally:
            for p in processes:
                if p.is_alive():
                    p.terminate()
            for p in processes:
                p.join(5)
                if p.is_alive():  # ignored SIGTERM: stop it for good
                    p.kill()
                    p.join()
            results.close()
            results.join_thread()


def _collect(processes, results, world_size: int, timeout: float, log_paths) -> list[Any]:
    """Wait for one message per rank; raise as soon as a rank fails, dies or time runs out."""
    out: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(out) < world_size:
        try:
            message = results.get(timeout=0.05)
        except queue.Empty:
            dead = [r for r, p in enumerate(processes) if r not in out and p.exitcode is not None]
            if dead:
                try:  # a rank sends its result just before it exits: read the queue before judging
                    message = results.get(timeout=0.5)
                except queue.Empty:
                    r = dead[0]
                    output = _tail(log_paths[r])
                    raise RuntimeError(
                        f"rank {r} of {world_size} exited with code {processes[r].exitcode} "
                        f"without a result" + (f"; its output:\n{output}" if output else "")) from None
            elif time.monotonic() > deadline:
                missing = [r for r in range(world_size) if r not in out]
                raise TimeoutError(f"rank(s) {missing} of {world_size} did not finish within "
                                   f"timeout={timeout} s (a collective that not every rank calls "
                                   f"waits forever)") from None
            else:
                continue
        if message[0] == "error":
            raise RuntimeError(_failure(message, results, world_size, log_paths))
        _, r, data = message
        out[r] = pickle.loads(data)
    return [out[r] for r in range(world_size)]


def _failure(first, results, world_size: int, log_paths) -> str:
    """The error message for a failed rank: its error, its traceback and the tail of its
    output, then one line for each other rank that failed within a second (usually because
    the first one left a collective)."""
    _, r, error, trace = first
    output = _tail(log_paths[r])
    text = f"rank {r} of {world_size} raised {error}\n{trace}" + (f"its output:\n{output}\n" if output else "")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            message = results.get(timeout=0.1)
        except queue.Empty:
            continue
        if message[0] == "error":
            line = message[2] if len(message[2]) <= 300 else message[2][:300] + "..."
            text += f"\nthen rank {message[1]} failed too: {line}"
    return text
