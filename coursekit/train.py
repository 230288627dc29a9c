"""Training helpers: one ``fit`` loop that runs unchanged on a laptop CPU, a GPU, or several GPUs.

A chapter trains a model in a few lines and gets a history it can plot::

    >>> import torch
    >>> from coursekit.data import load_sklearn
    >>> from coursekit.scaling import StandardScaler
    >>> from coursekit.train import fit, evaluate, seed_everything
    >>> data = load_sklearn("digits")
    >>> scaler = StandardScaler().fit(data.X_train)
    >>> train = (scaler.transform(data.X_train), data.y_train)
    >>> val = (scaler.transform(data.X_val), data.y_val)
    >>> seed_everything(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    >>> history = fit(model, train, val, epochs=20,
    ...               optimizer=lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9))
    >>> history["val_acc"][-1]          # one float per epoch, ready for matplotlib
    >>> evaluate(model, (scaler.transform(data.X_test), data.y_test))   # {'loss': ..., 'acc': ...}

What ``fit`` does for speed, so that chapters need not:

- the device is picked automatically (:func:`default_device`: ``$COURSEKIT_DEVICE``, else
  CUDA, MPS, CPU), and the model and in-memory data are moved there once;
- tensor data sets stay on the device and are batched with ``torch.randperm`` and
  ``index_select`` (several times faster than ``DataLoader(TensorDataset(...))``, which
  fetches and collates sample by sample); any ``torch.utils.data`` loader still works;
- losses and metrics are summed on the device and read once per epoch: no ``.item()``,
  hence no host synchronization, inside the training loop;
- options: mixed precision (``amp``), ``torch.compile``, gradient clipping, a learning-rate
  scheduler, ``channels_last``; and data-parallel training when launched with ``torchrun``
  (DDP; ``sync_batchnorm=True`` converts BatchNorm layers to synchronized ones).

Environment variables: ``COURSEKIT_DEVICE`` (e.g. ``cpu``, ``cuda:1``), ``COURSEKIT_PROGRESS=0``
(no progress bar), ``COURSEKIT_QUIET=1`` (no bar, and warnings recorded in
``history.warnings`` instead of printed: for nbgrader, which scores 0 for any stderr),
``COURSEKIT_SCALE`` (how much larger than in the book a chapter runs its experiments: see
:func:`scaled`).
"""
from __future__ import annotations

import contextlib
import functools
import math
import operator
import os
import random
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from coursekit.callbacks import (Callback, CallbackList, FitState, ProgressBar, SchedulerPerEpoch,
                                 SchedulerPerStep, StepLossLogger)
from coursekit.distributed import SyncBatchNorm, convert_sync_batchnorm, read_sums
from coursekit.distributed import setup as setup_distributed
from coursekit.history import History
from coursekit.modes import restored_modes
from coursekit.regularization.early_stopping import EarlyStopping
from coursekit.validate import positive_int

__all__ = [
    "default_device", "run_scale", "scaled", "seed_everything", "accuracy", "History",
    "fit", "FitOptions", "evaluate", "predict", "fit_seeds", "SeedRuns",
    # re-exported, so that one import serves a chapter:
    "Callback", "EarlyStopping", "FitState", "SyncBatchNorm", "convert_sync_batchnorm",
]


# --------------------------------------------------------------------------- environment

def _env_flag(name: str, default: bool) -> bool:
    """Read a yes/no environment variable (``1/0``, ``true/false``, ``yes/no``, ``on/off``)."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"environment variable {name} must be 0 or 1 (or true/false, yes/no, "
                     f"on/off), got {value!r}")


def default_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on: ``device`` if given, else ``$COURSEKIT_DEVICE``, else the first
    available of CUDA, MPS (Apple GPUs) and CPU.

    Under ``torchrun`` a bare ``"cuda"`` means this process's own GPU, ``cuda:$LOCAL_RANK``.

    Args:
        device: a device or its name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``). Default: ``None``.

    Raises:
        ValueError: if the name is not a device, or names a device this machine does not have.
    """
    source = "argument"
    if device is None and os.environ.get("COURSEKIT_DEVICE", "").strip():
        device, source = os.environ["COURSEKIT_DEVICE"].strip(), "COURSEKIT_DEVICE"
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r} (from the {source}); "
                         f"expected e.g. 'cpu', 'cuda', 'cuda:1' or 'mps'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} (from the {source}) needs CUDA, "
                             f"which this machine does not have; use 'cpu'")
        if dev.index is None and "LOCAL_RANK" in os.environ:
            dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} (from the {source}) does not exist: "
                             f"this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} (from the {source}) is not available on this machine")
    return dev


def run_scale() -> float:
    """How much larger than in the book the experiments of a chapter run: ``$COURSEKIT_SCALE``,
    default 1 (the book's own runs, sized to execute in about a minute on a laptop CPU).

    ``COURSEKIT_SCALE=4`` asks for four times more epochs, steps and seeds wherever a chapter
    sizes them with :func:`scaled`; a value below 1 gives a quick, rougher run.

    Raises:
        ValueError: if ``$COURSEKIT_SCALE`` is not a positive finite number.
    """
    value = os.environ.get("COURSEKIT_SCALE", "").strip()
    if value == "":
        return 1.0
    try:
        scale = float(value)
    except ValueError:
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"environment variable COURSEKIT_SCALE must be a positive number "
                         f"(1: the book's runs, 4: four times larger), got {value!r}")
    return scale


def scaled(n: int, *, minimum: int = 1) -> int:
    """``n`` (epochs, steps, seeds, ...) times :func:`run_scale`, rounded, and at least ``minimum``.

    With ``COURSEKIT_SCALE`` unset, ``scaled(n) == n``: the book's runs. A chapter writes
    ``epochs=scaled(10)`` and ``seeds=range(scaled(3))`` so that a reader with more time, or a
    GPU, can rerun all of its experiments larger with one environment variable.

    Args:
        n: the size of the book's run (a positive integer).
        minimum: the smallest size that still makes sense (e.g. 2 seeds for a spread). Default: 1.

    Raises:
        ValueError: if ``n`` or ``minimum`` is not a positive integer, or ``$COURSEKIT_SCALE`` is invalid.
    """
    for name, value in (("n", n), ("minimum", minimum)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return max(minimum, round(n * run_scale()))


def seed_everything(seed: int, *, deterministic: bool = False) -> int:
    """Seed Python's, NumPy's and PyTorch's (CPU and every GPU) random number generators.

    Call it before building the model: the initial weights, the shuffling in :func:`fit`
    and dropout then all follow from ``seed``, and on CPU the same seed gives the same history.

    Args:
        seed: an integer in ``[0, 2**32)``.
        deterministic: also ask PyTorch for deterministic algorithms (a *global* setting:
            ``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN benchmark off),
            needed for bit-identical runs on GPUs. Default: ``False``.

    Returns:
        the seed.
    """
    try:
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}") from None
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds the CPU, CUDA and MPS generators
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return seed


def accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of correct predictions in a batch, as a 0-dim tensor on the batch's device.

    - ``output`` of shape :math:`(N, C)` (logits or probabilities): the prediction is
      ``output.argmax(1)``; ``target`` holds class indices :math:`(N,)`, or soft labels
      :math:`(N, C)` (label smoothing, mixup), whose argmax is the true class.
    - ``output`` of shape :math:`(N,)` or :math:`(N, 1)`: binary logits, predicted positive
      where ``output > 0``; ``target`` holds 0/1.
    """
    if output.dim() == 1 or (output.dim() == 2 and output.shape[1] == 1):
        predicted = output.reshape(-1) > 0
        return (predicted == (target.reshape(-1) > 0.5)).float().mean()
    if target.dim() == output.dim():  # soft labels (N, C)
        target = target.argmax(dim=1)
    return (output.argmax(dim=1) == target).float().mean()


def _default_metrics(loss_fn: Callable) -> dict[str, Callable]:
    """Accuracy for classification losses, nothing otherwise."""
    if loss_fn in (F.cross_entropy, F.nll_loss, F.binary_cross_entropy_with_logits) or isinstance(
            loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss, nn.BCEWithLogitsLoss)):
        return {"acc": accuracy}
    return {}


# --------------------------------------------------------------------------- batching

def _as_tensors(data, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(X, y)`` from a pair of tensors or a ``TensorDataset``; ``None`` for a loader."""
    if isinstance(data, torch.utils.data.TensorDataset):
        data = data.tensors
    if isinstance(data, torch.Tensor):
        raise TypeError(f"{name} must be a pair (X, y) or a DataLoader, got a single tensor "
                        f"of shape {tuple(data.shape)}")
    if isinstance(data, (tuple, list)):
        if len(data) != 2 or not all(isinstance(t, torch.Tensor) for t in data):
            raise TypeError(f"{name} must be a pair (X, y) of tensors, got a {type(data).__name__} "
                            f"of {len(data)} item(s): {[type(t).__name__ for t in data]}")
        X, y = data
        if X.dim() == 0 or y.dim() == 0 or len(X) != len(y):
            raise ValueError(f"{name}: X and y must have the same number of samples, got shapes "
                             f"{tuple(X.shape)} and {tuple(y.shape)}")
        if len(X) == 0:
            raise ValueError(f"{name} is empty (X has shape {tuple(X.shape)})")
        return X, y
    if isinstance(data, Iterable):
        return None
    raise TypeError(f"{name} must be a pair (X, y) of tensors or a DataLoader, got {type(data).__name__}")


def _epoch_order(n: int, generator: torch.Generator, *, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """The indices this process visits in one epoch, like ``DistributedSampler``.

    Every process draws the same permutation of ``range(n)`` (same generator state), pads it
    by wrapping around so its length divides by ``world_size``, and takes every
    ``world_size``-th index starting at ``rank``. With one process: the permutation itself.
    """
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if world_size > 1:
        total = -(-n // world_size) * world_size           # n rounded up to a multiple
        order = order.repeat(-(-total // n))[:total]          # pad by wrapping around
        order = order[rank:total:world_size]                  # (total // world_size,)
    return order


def _tensor_batches(X: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int,
                    drop_last: bool = False):
    """Yield ``(X[idx], y[idx], len(idx))`` for consecutive chunks ``idx`` of ``order``.

    ``index_select`` gathers a batch in one kernel; ``len(idx)`` is known on the host, so
    nothing here waits for the device.
    """
    n = len(order)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield X.index_select(0, idx), y.index_select(0, idx), len(idx)


def _slice_batches(X: torch.Tensor, y: torch.Tensor, batch_size: int):
    """Yield consecutive ``(X[i:i+b], y[i:i+b], b)`` in order: views, nothing is copied."""
    for start in range(0, len(X), batch_size):
        yield X[start:start + batch_size], y[start:start + batch_size], min(batch_size, len(X) - start)


def _loader_batches(loader: Iterable, device: torch.device, name: str):
    """Yield ``(x, y, len(x))`` from any loader of ``(x, y)`` pairs, moved to ``device``."""
    for batch in loader:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(f"{name} must yield pairs (x, y), got a {type(batch).__name__}"
                            + (f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else ""))
        x, y = batch
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True), len(x)


# --------------------------------------------------------------------------- options

def _autocast(device: torch.device, amp: bool | str) -> tuple[Callable, torch.dtype | None]:
    """A factory of the autocast context for ``amp``, and the low-precision dtype (or None)."""
    if amp is False or amp is None:
        return contextlib.nullcontext, None
    if amp is True:
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float16 if device.type == "mps" else torch.bfloat16
    elif amp in ("bf16", "bfloat16"):
        dtype = torch.bfloat16
    elif amp in ("fp16", "float16"):
        dtype = torch.float16
    else:
        raise ValueError(f"amp must be False, True, 'bf16' or 'fp16', got {amp!r}")
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype), dtype


def _make_optimizer(optimizer, model: nn.Module) -> torch.optim.Optimizer:
    if optimizer is None:
        return torch.optim.Adam(model.parameters(), lr=1e-3)
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        made = optimizer(model.parameters())
        if not isinstance(made, torch.optim.Optimizer):
            raise TypeError(f"the optimizer factory must return a torch.optim.Optimizer, "
                            f"got {type(made).__name__}")
        return made
    raise TypeError(f"optimizer must be a torch.optim.Optimizer, a factory "
                    f"f(params) -> Optimizer, or None, got {type(optimizer).__name__}")


def _make_scheduler(scheduler, optimizer: torch.optim.Optimizer):
    if scheduler is None or hasattr(scheduler, "step"):
        return scheduler
    if callable(scheduler):
        return scheduler(optimizer)
    raise TypeError(f"scheduler must be a learning-rate scheduler or a factory "
                    f"f(optimizer) -> scheduler, got {type(scheduler).__name__}")


# --------------------------------------------------------------------------- evaluation

@torch.no_grad()
def _evaluation_sums(model: nn.Module, batches, loss_fn: Callable | None,
                     metrics: Mapping[str, Callable], autocast: Callable) -> list:
    """``[loss sum, count, metric sums...]`` over the batches, as device tensors (no sync)."""
    loss_sum, count, sums = 0.0, 0, dict.fromkeys(metrics, 0.0)
    for xb, yb, n in batches:
        with autocast():
            out = model(xb)
            if loss_fn is not None:
                loss_sum = loss_sum + loss_fn(out, yb) * n
        for name, metric in metrics.items():
            sums[name] = sums[name] + metric(out, yb) * n
        count += n
    return [loss_sum, count, *sums.values()]


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return default_device()


@contextlib.contextmanager
def _evaluation_mode(model: nn.Module):
    """``model.eval()`` inside the block; afterwards every submodule gets back its own mode
    (a layer frozen in eval mode inside a training model stays in eval mode)."""
    with restored_modes(model):
        model.eval()
        yield


def _eval_batches(data, device: torch.device, batch_size: int, name: str):
    tensors = _as_tensors(data, name)
    if tensors is None:
        return _loader_batches(data, device, name)
    return _slice_batches(*(t.to(device) for t in tensors), batch_size)


def evaluate(model: nn.Module, data, *, loss_fn: Callable = F.cross_entropy,
             metrics: Mapping[str, Callable] | None = None, batch_size: int = 1024,
             device: str | torch.device | None = None, amp: bool | str = False) -> dict[str, float]:
    """The mean loss and metrics of ``model`` on ``data``, in evaluation mode, without gradients.

    Args:
        model: the model; it is put in ``eval()`` mode, and each submodule's mode is
            restored afterwards.
        data: a pair ``(X, y)`` of tensors, a ``TensorDataset``, or a loader of ``(x, y)`` batches.
        loss_fn: ``loss_fn(output, target)``, the mean over the batch. Default: ``F.cross_entropy``.
        metrics: ``{name: metric(output, target)}``, each the batch mean; default
            ``{"acc": accuracy}`` for classification losses, else none.
        batch_size: samples per forward pass (memory only; the result does not depend on it). Default: 1024.
        device: where to compute; default: where the model's parameters are.
        amp: mixed precision, as in :func:`fit`. Default: ``False``.

    Returns:
        ``{"loss": ..., "<metric>": ...}``, means over all samples, as floats.
    """
    positive_int(batch_size, "batch_size")
    metrics = _default_metrics(loss_fn) if metrics is None else dict(metrics)
    device = _model_device(model) if device is None else default_device(device)
    model.to(device)
    autocast, _ = _autocast(device, amp)
    with _evaluation_mode(model):
        sums = _evaluation_sums(model, _eval_batches(data, device, batch_size, "data"),
                                loss_fn, metrics, autocast)
    loss_sum, count, *metric_sums = read_sums(sums, device, all_reduce=False)
    if count == 0:
        raise ValueError("evaluate got no samples: the data is empty")
    return {"loss": loss_sum / count, **{k: s / count for k, s in zip(metrics, metric_sums)}}


@torch.no_grad()
def predict(model: nn.Module, data, *, batch_size: int = 1024,
            device: str | torch.device | None = None, amp: bool | str = False) -> torch.Tensor:
    """The outputs of ``model`` on ``data``, in evaluation mode, concatenated on the CPU.

    Args:
        model: the model; it is put in ``eval()`` mode and restored afterwards.
        data: inputs ``X`` (a tensor), a pair ``(X, y)`` (``y`` is ignored), or a loader
            yielding ``x`` or ``(x, y)`` batches.
        batch_size: samples per forward pass. Default: 1024.
        device: where to compute; default: where the model's parameters are.
        amp: mixed precision, as in :func:`fit` (outputs are returned in float32). Default: ``False``.

    Shape:
        - Output: :math:`(N, *)`, the model's output for each of the :math:`N` samples.
    """
    positive_int(batch_size, "batch_size")
    device = _model_device(model) if device is None else default_device(device)
    model.to(device)
    autocast, low = _autocast(device, amp)
    if isinstance(data, torch.utils.data.TensorDataset):
        data = data.tensors
    if isinstance(data, (tuple, list)):
        data = data[0]
    if isinstance(data, torch.Tensor):
        X = data.to(device)
        batches = (X[i:i + batch_size] for i in range(0, len(X), batch_size))
    else:
        batches = (b[0] if isinstance(b, (tuple, list)) else b for b in data)
    outputs = []
    with _evaluation_mode(model):
        for xb in batches:
            with autocast():
                out = model(xb.to(device, non_blocking=True))
            outputs.append(out.float() if low is not None else out)
    if not outputs:
        raise ValueError("predict got no samples: the data is empty")
    return torch.cat(outputs).cpu()


# --------------------------------------------------------------------------- fit

def fit(model: nn.Module, train_data, val_data=None, *,
        epochs: int = 10,
        loss_fn: Callable = F.cross_entropy,
        optimizer: torch.optim.Optimizer | Callable | None = None,
        batch_size: int = 64,
        metrics: Mapping[str, Callable] | None = None,
        train_metrics: bool = False,
        callbacks: Sequence = (),
        scheduler=None,
        scheduler_interval: str = "epoch",
        clip_grad_norm: float | None = None,
        amp: bool | str = False,
        compile: bool | Mapping[str, Any] = False,
        channels_last: bool = False,
        device: str | torch.device | None = None,
        seed: int | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        augment: Callable | None = None,
        eval_batch_size: int = 1024,
        log_every: int | None = None,
        distributed: bool | None = None,
        sync_batchnorm: bool = False,
        progress: bool | None = None,
        quiet: bool | None = None,
        desc: str | None = None) -> History:
    r"""Train ``model`` on ``train_data`` for ``epochs`` epochs and return the :class:`History`.

    Each step computes ``loss = loss_fn(model(x), y)`` on a batch, back-propagates, and takes an
    optimizer step; after each epoch the model is evaluated on ``val_data``. The model is
    trained in place (and moved to the device).

    Args:
        model: the ``nn.Module`` to train.
        train_data: a pair ``(X, y)`` of tensors (or a ``TensorDataset``): kept on the device
            and batched by permutation indexing; or any loader yielding ``(x, y)`` batches.
        val_data: the same kinds, evaluated after every epoch. Default: ``None``.
        epochs: number of passes over ``train_data``. Default: 10.
        loss_fn: ``loss_fn(output, target)``, the *mean* over the batch. Default: ``F.cross_entropy``.
        optimizer: an optimizer over ``model``'s parameters, or a factory
            ``f(params) -> Optimizer`` (e.g. ``lambda p: torch.optim.SGD(p, lr=0.1)``).
            Default: ``torch.optim.Adam`` with ``lr=1e-3``.
        batch_size: samples per step (per process with DDP). Default: 64.
        metrics: ``{name: metric(output, target)}``, each returning the batch mean as a tensor,
            recorded as ``val_<name>``; default ``{"acc": accuracy}`` for classification losses.
        train_metrics: also record ``train_<name>``, the running metric during the epoch
            (in training mode). Default: ``False``.
        callbacks: :class:`Callback` objects or functions ``f(state) -> dict | None`` called at
            the end of every epoch, in order. ``scheduler`` and ``log_every`` are built-in
            callbacks that run before them, the progress bar one that runs after them
            (:mod:`coursekit.callbacks`). Default: none.
        scheduler: a learning-rate scheduler, or a factory ``f(optimizer) -> scheduler``.
            ``ReduceLROnPlateau`` is stepped with ``val_loss`` (else ``train_loss``). Default: ``None``.
        scheduler_interval: step the scheduler every ``"epoch"`` or every ``"step"``. Default: ``"epoch"``.
        clip_grad_norm: clip the gradients' global 2-norm to this value. Default: ``None``.
        amp: mixed precision: ``True`` (bf16 where supported, else fp16), ``"bf16"``, ``"fp16"``
            (with a gradient scaler), or ``False``. Default: ``False``.
        compile: ``torch.compile`` the model for training: ``True``, or a dict of
            ``torch.compile`` options (e.g. ``{"mode": "max-autotune"}``). Default: ``False``.
        channels_last: use the ``channels_last`` memory format for 4-D inputs (CNNs on GPUs).
            Default: ``False``.
        device: where to train; default :func:`default_device` (``$COURSEKIT_DEVICE``, else
            CUDA, MPS, CPU).
        seed: if given, :func:`seed_everything` is called with it and it seeds the shuffling;
            otherwise the shuffling is seeded from torch's global generator, so a
            ``seed_everything`` before building the model fixes the whole run. Default: ``None``.
        shuffle: reshuffle tensor data every epoch. Default: ``True``.
        drop_last: drop the last, incomplete batch of each epoch of tensor data (e.g. a
            batch of one sample breaks BatchNorm; a loader has its own). Default: ``False``.
        augment: ``augment(x, y) -> (x, y)``, applied to every training batch on the device
            before the forward pass (data augmentation, input noise, mixup); never to the
            validation data. It may return soft targets ``(N, classes)``, which
            ``F.cross_entropy`` accepts. Default: ``None``.
        eval_batch_size: batch size for the validation pass. Default: 1024.
        log_every: also record the training loss every ``log_every`` steps in
            ``history.steps`` (kept on the device, read at the end of the epoch). Default: ``None``.
        distributed: DDP across the processes launched by ``torchrun``; ``None`` means yes
            when ``$WORLD_SIZE > 1``. Default: ``None``.
        sync_batchnorm: with DDP, convert BatchNorm layers to synchronized ones (batch
            statistics over the global batch; :func:`convert_sync_batchnorm`). Default: ``False``.
        progress: show a progress bar over epochs (stdout, or a notebook widget; rank 0 only);
            ``None`` reads ``$COURSEKIT_PROGRESS`` (default on). Default: ``None``.
        quiet: no progress bar, and warnings raised during training are recorded in
            ``history.warnings`` instead of printed to stderr (nbgrader scores 0 for any
            stderr); ``None`` reads ``$COURSEKIT_QUIET`` (default off). Default: ``None``.
        desc: label of the progress bar. Default: ``"fit"``.

    Returns:
        the :class:`History`, one entry per epoch per key.

    With DDP, ``batch_size`` is per process: the global batch is ``batch_size * world_size``.
    Tensor data is sharded like ``DistributedSampler`` (the same seeded permutation on every
    process, each taking every ``world_size``-th sample); each process validates on its
    contiguous share of ``val_data``; a loader must bring its own ``DistributedSampler``
    (its ``set_epoch`` is called). Losses and metrics are summed over the processes once
    per epoch, so the history is the same on every process.

    Example::

        >>> history = fit(model, (X_train, y_train), (X_val, y_val), epochs=20,
        ...               optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        ...               callbacks=[EarlyStopping(patience=3)])
    """
    options = FitOptions(
        epochs=epochs, loss_fn=loss_fn, optimizer=optimizer, batch_size=batch_size, metrics=metrics,
        train_metrics=train_metrics, callbacks=callbacks, scheduler=scheduler,
        scheduler_interval=scheduler_interval, clip_grad_norm=clip_grad_norm, amp=amp, compile=compile,
        channels_last=channels_last, device=device, seed=seed, shuffle=shuffle, drop_last=drop_last,
        augment=augment, eval_batch_size=eval_batch_size, log_every=log_every, distributed=distributed,
        sync_batchnorm=sync_batchnorm, progress=progress, quiet=quiet, desc=desc)
    if not options.quiet:
        return _fit(model, train_data, val_data, options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _fit(model, train_data, val_data, options)
    history.warnings.extend(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    return history


@dataclass
class FitOptions:
    """The keyword arguments of :func:`fit` (same names, same defaults, documented there),
    checked when the object is made.

    ``quiet`` and ``progress`` are resolved: ``None`` reads ``$COURSEKIT_QUIET`` and
    ``$COURSEKIT_PROGRESS``, and ``quiet`` turns the progress bar off.

    Raises:
        ValueError: if ``epochs``, ``batch_size``, ``eval_batch_size`` or ``log_every`` is not
            a positive integer, ``scheduler_interval`` is neither ``"epoch"`` nor ``"step"``,
            ``clip_grad_norm`` is not positive, or an environment variable is not a yes/no.
        TypeError: if ``augment`` is not callable.
    """

    epochs: int = 10
    loss_fn: Callable = F.cross_entropy
    optimizer: torch.optim.Optimizer | Callable | None = None
    batch_size: int = 64
    metrics: Mapping[str, Callable] | None = None
    train_metrics: bool = False
    callbacks: Sequence = ()
    scheduler: Any = None
    scheduler_interval: str = "epoch"
    clip_grad_norm: float | None = None
    amp: bool | str = False
    compile: bool | Mapping[str, Any] = False
    channels_last: bool = False
    device: str | torch.device | None = None
    seed: int | None = None
    shuffle: bool = True
    drop_last: bool = False
    augment: Callable | None = None
    eval_batch_size: int = 1024
    log_every: int | None = None
    distributed: bool | None = None
    sync_batchnorm: bool = False
    progress: bool | None = None
    quiet: bool | None = None
    desc: str | None = None

    def __post_init__(self):
        positive_int(self.epochs, "epochs")
        positive_int(self.batch_size, "batch_size")
        positive_int(self.eval_batch_size, "eval_batch_size")
        if self.log_every is not None:
            positive_int(self.log_every, "log_every")
        if self.scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {self.scheduler_interval!r}")
        if self.augment is not None and not callable(self.augment):
            raise TypeError(f"augment must be a function augment(x, y) -> (x, y), "
                            f"got {type(self.augment).__name__}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be positive, got {self.clip_grad_norm}")
        self.quiet = _env_flag("COURSEKIT_QUIET", False) if self.quiet is None else bool(self.quiet)
        progress = _env_flag("COURSEKIT_PROGRESS", True) if self.progress is None else bool(self.progress)
        self.progress = progress and not self.quiet


def _fit(model: nn.Module, train_data, val_data, options: FitOptions) -> History:
    """The body of :func:`fit`: set up, then train and validate epoch after epoch."""
    run = _set_up(model, options)
    train_tensors, val_tensors = _data_on_device(train_data, val_data, run)
    generator = _shuffle_generator(options.seed, run)
    history = History()
    state = FitState(model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, history=history,
                     device=run.device, epochs=options.epochs, rank=run.rank, world_size=run.world_size)
    bar = ProgressBar(options.desc) if options.progress else None
    events = CallbackList([*run.callbacks, *options.callbacks, *([bar] if bar is not None else [])])
    try:
        events("on_fit_start", state)
        start = time.perf_counter()
        for epoch in range(1, options.epochs + 1):
            state.epoch = epoch
            lr = float(run.optimizer.param_groups[0]["lr"])  # the learning rate the epoch starts with
            run.train_model.train()
            events("on_epoch_start", state)  # after train(): a callback may freeze layers in eval mode
            batches = _epoch_batches(train_data, train_tensors, epoch, generator, options, run)
            sums = _train_epoch(run, batches, state, events)
            if sums[1] == 0:  # the sample count: drop_last dropped the only batch, or no data
                samples = len(train_tensors[0]) if train_tensors is not None else 0
                raise ValueError(f"epoch {epoch} had no training batch: {samples} samples with "
                                 f"batch_size={options.batch_size} and drop_last={options.drop_last}")
            if val_data is not None:
                sums += _validation_sums(run, val_data, val_tensors, options.eval_batch_size)
            values = read_sums(sums, run.device, all_reduce=run.world_size > 1)  # the epoch's one read
            logs = {**_epoch_logs(epoch, values, run, validated=val_data is not None),
                    "lr": lr, "time": time.perf_counter() - start}
            state.logs = logs
            events.epoch_end(state)  # the scheduler first, then the callbacks, the progress bar last
            history.append(logs)
            if state.stop_training:
                break
        events("on_fit_end", state)
    finally:
        if bar is not None:
            bar.close()  # also when training stopped with an exception
    return history


@dataclass
class _Run:
    """What :func:`fit` sets up once: where it trains, the model and its wrappers, the
    optimizer, the numerics of a step, and the built-in callbacks that go before the user's."""

    device: torch.device
    rank: int
    world_size: int
    model: nn.Module            # the model itself: its parameters are clipped, it is validated
    train_model: nn.Module      # what the training step calls: the model, or its DDP/compiled wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: Callable
    metrics: dict[str, Callable]          # validation metrics
    train_metrics: dict[str, Callable]    # running metrics during training (empty unless asked)
    autocast: Callable
    scaler: torch.amp.GradScaler | None   # fp16 only
    clip_grad_norm: float | None
    augment: Callable | None
    channels_last: bool
    callbacks: list


def _set_up(model: nn.Module, options: FitOptions) -> _Run:
    """Pick the device, join the processes, move (and wrap) the model, make the optimizer and
    the scheduler, and choose the precision."""
    device = default_device(options.device)
    rank, world_size = setup_distributed(options.distributed, device)
    model.to(device)
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    if options.sync_batchnorm and world_size > 1:
        model = convert_sync_batchnorm(model)
    optimizer = _make_optimizer(options.optimizer, model)
    scheduler = _make_scheduler(options.scheduler, optimizer)
    callbacks = [] if scheduler is None else [
        SchedulerPerStep(scheduler) if options.scheduler_interval == "step" else SchedulerPerEpoch(scheduler)]
    if options.log_every is not None:
        callbacks.append(StepLossLogger(options.log_every))
    train_model = model
    if world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if options.compile:
        compile_options = options.compile if isinstance(options.compile, Mapping) else {}
        train_model = torch.compile(train_model, **compile_options)
    autocast, low_dtype = _autocast(device, options.amp)
    scaler = torch.amp.GradScaler(device.type) if low_dtype == torch.float16 else None
    metrics = _default_metrics(options.loss_fn) if options.metrics is None else dict(options.metrics)
    return _Run(device=device, rank=rank, world_size=world_size, model=model, train_model=train_model,
                optimizer=optimizer, scheduler=scheduler, loss_fn=options.loss_fn, metrics=metrics,
                train_metrics=metrics if options.train_metrics else {}, autocast=autocast, scaler=scaler,
                clip_grad_norm=options.clip_grad_norm, augment=options.augment,
                channels_last=options.channels_last, callbacks=callbacks)


def _data_on_device(train_data, val_data, run: _Run):
    """The tensors of ``train_data`` and this process's share of ``val_data``'s, moved to the
    device once; ``None`` for a loader (or no validation data)."""
    train_tensors = _as_tensors(train_data, "train_data")
    if train_tensors is not None:
        train_tensors = tuple(t.to(run.device) for t in train_tensors)
    val_tensors = None if val_data is None else _as_tensors(val_data, "val_data")
    if val_tensors is not None:
        Xv, yv = (t.to(run.device) for t in val_tensors)
        lo, hi = run.rank * len(Xv) // run.world_size, (run.rank + 1) * len(Xv) // run.world_size
        val_tensors = Xv[lo:hi], yv[lo:hi]  # this process's share (views: nothing is copied)
    return train_tensors, val_tensors


def _shuffle_generator(seed: int | None, run: _Run) -> torch.Generator:
    """The generator that shuffles the training data, the same on every process: seeded with
    ``seed`` (after :func:`seed_everything`), else drawn from torch's global generator."""
    if seed is not None:
        seed_everything(seed)
    shuffle_seed = seed if seed is not None else int(torch.randint(0, 2**62, ()).item())
    if run.world_size > 1:
        shared = torch.tensor([shuffle_seed], device=run.device)
        dist.broadcast(shared, src=0)
        shuffle_seed = int(shared.item())
    return torch.Generator().manual_seed(shuffle_seed)


def _epoch_batches(train_data, tensors, epoch: int, generator: torch.Generator, options: FitOptions,
                   run: _Run):
    """This process's training batches ``(x, y, n)`` for one epoch: tensors in a fresh
    shuffled order, or the loader's batches (its sampler told the epoch)."""
    if tensors is not None:
        X, y = tensors
        order = _epoch_order(len(X), generator, shuffle=options.shuffle, rank=run.rank,
                             world_size=run.world_size).to(run.device, non_blocking=True)
        return _tensor_batches(X, y, order, options.batch_size, options.drop_last)
    sampler = getattr(train_data, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    return _loader_batches(train_data, run.device, "train_data")


def _train_epoch(run: _Run, batches, state: FitState, events: CallbackList) -> list:
    """One pass over the training batches: ``[loss sum, count, train metric sums...]``, as
    device tensors. Nothing in here waits for the device."""
    loss_sum, count = 0.0, 0
    metric_sums = dict.fromkeys(run.train_metrics, 0.0)
    batch_events = bool(events.handlers["on_batch_end"])
    for xb, yb, n in batches:
        if run.augment is not None:
            xb, yb = run.augment(xb, yb)
        if run.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        out, loss = _train_step(run, xb, yb)
        loss_sum = loss_sum + loss.detach() * n   # a device tensor: no .item() here
        count += n
        for name, metric in run.train_metrics.items():
            metric_sums[name] = metric_sums[name] + metric(out.detach(), yb) * n
        state.step += 1
        if batch_events:  # filled only for callbacks that handle on_batch_end
            state.loss, state.output, state.batch = loss.detach(), out, (xb, yb)
            events("on_batch_end", state)
    state.loss = state.output = state.batch = None
    return [loss_sum, count, *metric_sums.values()]


def _train_step(run: _Run, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, loss, backward, gradient clipping and optimizer step on one batch:
    ``(output, loss)``."""
    run.optimizer.zero_grad(set_to_none=True)
    with run.autocast():
        out = run.train_model(xb)
        loss = run.loss_fn(out, yb)
    if run.scaler is None:
        loss.backward()
        if run.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(run.model.parameters(), run.clip_grad_norm)
        run.optimizer.step()
    else:  # fp16: scale the loss so small gradients do not underflow
        run.scaler.scale(loss).backward()
        if run.clip_grad_norm is not None:
            run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(run.model.parameters(), run.clip_grad_norm)
        run.scaler.step(run.optimizer)
        run.scaler.update()
    return out, loss


def _validation_sums(run: _Run, val_data, val_tensors, batch_size: int) -> list:
    """``[loss sum, count, metric sums...]`` on this process's validation data, in eval mode."""
    run.train_model.eval()
    batches = (_slice_batches(*val_tensors, batch_size) if val_tensors is not None
               else _loader_batches(val_data, run.device, "val_data"))
    return _evaluation_sums(run.model, batches, run.loss_fn, run.metrics, run.autocast)


def _epoch_logs(epoch: int, values: list[float], run: _Run, validated: bool) -> dict[str, float]:
    """The epoch's means from the sums that :func:`_train_epoch` and :func:`_validation_sums`
    returned (read on the host, summed over the processes)."""
    train_sum, train_count, *rest = values
    logs = {"epoch": epoch, "train_loss": train_sum / train_count}
    for name in run.train_metrics:
        logs[f"train_{name}"] = rest.pop(0) / train_count
    if validated:
        val_sum, val_count, *rest = rest
        logs["val_loss"] = val_sum / val_count if val_count else math.nan
        for name in run.metrics:
            logs[f"val_{name}"] = rest.pop(0) / val_count if val_count else math.nan
    return logs


# --------------------------------------------------------------------------- several seeds

@dataclass
class SeedRuns:
    """The runs of :func:`fit_seeds`: one history and one trained model per seed.

    ``mean[key]`` and ``std[key]`` are per-epoch lists over the seeds; ``std`` is the sample
    standard deviation (ddof=1; 0 with a single seed). Runs stopped early count only for
    the epochs they reached.
    """

    seeds: list[int]
    histories: list[History]
    models: list[nn.Module]

    def keys(self) -> list[str]:
        """The history keys every run recorded."""
        common = set(self.histories[0])
        for h in self.histories[1:]:
            common &= set(h)
        return [k for k in self.histories[0] if k in common]

    def stack(self, key: str) -> np.ndarray:
        """``key`` of every run as an array of shape ``(runs, epochs)``, NaN-padded."""
        if key not in self.keys():
            raise KeyError(f"{key!r} is not recorded by every run; available: {self.keys()}")
        epochs = max(len(h[key]) for h in self.histories)
        out = np.full((len(self.histories), epochs), np.nan)
        for i, h in enumerate(self.histories):
            out[i, :len(h[key])] = h[key]
        return out

    def _mean_std(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        a = self.stack(key)                                 # (runs, epochs)
        valid = ~np.isnan(a)
        n = valid.sum(axis=0)
        mean = np.where(valid, a, 0.0).sum(axis=0) / np.maximum(n, 1)
        squares = np.where(valid, (a - mean) ** 2, 0.0).sum(axis=0)
        std = np.sqrt(squares / np.maximum(n - 1, 1))       # 0 where a single run
        return mean, std

    @property
    def mean(self) -> dict[str, list[float]]:
        return {k: self._mean_std(k)[0].tolist() for k in self.keys()}

    @property
    def std(self) -> dict[str, list[float]]:
        return {k: self._mean_std(k)[1].tolist() for k in self.keys()}

    def __repr__(self) -> str:
        return f"SeedRuns(seeds={self.seeds}, keys={self.keys()})"


def fit_seeds(make_model: Callable[[], nn.Module], train_data, val_data=None, *,
              seeds: Sequence[int] = (0, 1, 2), **fit_kwargs) -> SeedRuns:
    """Train a fresh model for each seed with :func:`fit`: the mean ± spread of a comparison.

    For each seed: :func:`seed_everything`, ``model = make_model()``, then
    ``fit(model, train_data, val_data, seed=seed, **fit_kwargs)``.

    Args:
        make_model: builds a fresh model (called after seeding, so the seed sets its weights).
        train_data, val_data: as in :func:`fit` (tensors are moved to the device once).
        seeds: the seeds. Default: ``(0, 1, 2)``.
        **fit_kwargs: passed to :func:`fit`; ``optimizer`` and ``scheduler`` must be factories,
            since each seed has its own model.

    Returns:
        a :class:`SeedRuns`: ``histories``, ``models``, and per-epoch ``mean`` and ``std``.

    Example::

        >>> runs = fit_seeds(lambda: make_mlp(norm="batch"), train, val, epochs=20,
        ...                  optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
        >>> runs.mean["val_acc"][-1], runs.std["val_acc"][-1]
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    if "seed" in fit_kwargs:
        raise TypeError("fit_seeds sets fit's seed itself: pass seeds=[...] instead of seed=")
    for name in ("optimizer", "scheduler"):
        if hasattr(fit_kwargs.get(name), "step"):  # an optimizer or scheduler object, not a factory
            raise TypeError(f"fit_seeds trains a new model per seed, so {name} must be a factory "
                            f"(e.g. lambda p: torch.optim.SGD(p, lr=0.1)), "
                            f"not a {type(fit_kwargs[name]).__name__}")
    device = default_device(fit_kwargs.get("device"))
    fit_kwargs["device"] = device

    def on_device(data):
        tensors = None if data is None else _as_tensors(data, "data")
        return data if tensors is None else tuple(t.to(device) for t in tensors)

    train_data, val_data = on_device(train_data), on_device(val_data)
    histories, models = [], []
    for seed in seeds:
        seed_everything(seed)
        model = make_model()
        kwargs = {"desc": f"seed {seed}", **fit_kwargs}
        histories.append(fit(model, train_data, val_data, seed=seed, **kwargs))
        models.append(model)
    return SeedRuns(seeds, histories, models)
