"""Data-parallel training across processes with ``torch.distributed``.

:func:`coursekit.train.fit` trains with DistributedDataParallel when the script is launched
by ``torchrun`` (``torchrun --nproc_per_node 2 script.py``): NCCL between GPUs, gloo
between CPU processes. This module holds what that needs beyond PyTorch itself:

- :func:`setup` joins the process group that ``torchrun`` describes;
- :class:`SyncBatchNorm`, batch normalization over the *global* batch in plain tensor ops,
  because ``torch.nn.SyncBatchNorm`` runs on GPUs only, and :func:`convert_sync_batchnorm`.
"""
from __future__ import annotations

import atexit
import os

from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["setup", "SyncBatchNorm", "convert_sync_batchnorm", "read_sums"]


def setup(distributed: bool | None, device: torch.device) -> tuple[int, int]:
    """``(rank, world_size)``; joins the process group ``torchrun`` describes if needed.

    The backend is NCCL for CUDA devices and gloo otherwise (CPU).
    """
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    initialized = dist.is_available() and dist.is_initialized()
    if distributed is None:
        distributed = env_world > 1 or (initialized and dist.get_world_size() > 1)
    if not distributed:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError("distributed training needs torch.distributed, which this PyTorch build lacks")
    if not initialized:
        if "RANK" not in os.environ or "MASTER_ADDR" not in os.environ:
            raise RuntimeError("distributed=True needs processes started by torchrun, e.g. "
                               "`torchrun --nproc_per_node 2 script.py`")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_destroy_process_group)
    return dist.get_rank(), dist.get_world_size()


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum a tensor over all processes, differentiably.

    Every process's result is the global sum, so every process's loss depends on every
    process's input: the gradient of the input is the sum of the gradients over processes.
    """

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        tensor = tensor.clone()
        dist.all_reduce(tensor, group=group)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    r"""Batch normalization over the *global* batch of all processes, in plain tensor ops.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    where the mean and the (biased) variance of each channel are taken over the samples
    (and positions) of every process: the same as ``BatchNorm`` on the concatenated batch.
    Two all-reduces per layer (the sums, then the squared deviations); their backward
    all-reduces the gradients. ``torch.nn.SyncBatchNorm`` computes the same with fused GPU
    kernels but refuses CPU tensors; this one also runs on CPU with the gloo backend.
    ``running_var`` is updated with the unbiased variance, as in PyTorch.

    In eval mode, or without a process group of more than one process, it is ``BatchNorm``.

    Args:
        num_features: :math:`C`, the number of channels.
        eps: added to the variance. Default: 1e-5.
        momentum: for the running statistics (``None``: cumulative average). Default: 0.1.
        affine: learnable :math:`\gamma, \beta`. Default: ``True``.
        track_running_stats: keep running statistics. Default: ``True``.
        process_group: the processes to synchronize. Default: all.

    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, *)`, with :math:`N` per process.
        - Output: same shape (float32 under autocast).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None,
                 device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, *), got {input.dim()}D input "
                             f"of shape {tuple(input.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        synced = (self.training and dist.is_available() and dist.is_initialized()
                  and dist.get_world_size(self.process_group) > 1)
        if not synced:
            return super().forward(x)
        group = self.process_group
        x = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in >= float32
        dims = [0, *range(2, x.dim())]                 # every dimension but the channels
        shape = (1, -1) + (1,) * (x.dim() - 2)         # (C,) -> (1, C, 1, ...) to broadcast
        local_count = x.numel() // x.shape[1]
        sums = torch.cat([x.sum(dims), x.new_full((1,), local_count)])   # (C + 1,)
        sums = _AllReduceSum.apply(sums, group)
        count = sums[-1]                               # global samples per channel
        mean = sums[:-1] / count                       # (C,)
        xc = x - mean.view(shape)
        var = _AllReduceSum.apply((xc * xc).sum(dims), group) / count    # biased, (C,)
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(f * mean)
                self.running_var.mul_(1 - f).add_(f * var * count / (count - 1))
        return y


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every ``BatchNorm*d`` in ``module`` by a synchronized BatchNorm.

    On CUDA: ``torch.nn.SyncBatchNorm`` (fused kernels); elsewhere coursekit's
    :class:`SyncBatchNorm` (plain ops, CPU with gloo). Parameters and buffers are shared
    with the original layers, so an optimizer built before the conversion stays valid.
    Children are replaced in place; the (possibly new) top module is returned.
    """
    if any(p.is_cuda for p in module.parameters()):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, (SyncBatchNorm, nn.SyncBatchNorm)):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, process_group))
    return out


def read_sums(values: Sequence, device: torch.device, all_reduce: bool) -> list[float]:
    """Stack device scalars (and host numbers) into one tensor, sum it over the processes
    when ``all_reduce``, and read it on the host: one synchronization for all of them."""
    if not values:
        return []
    dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    if all_reduce:  # host numbers (sample counts) are summed over the processes too
        packed = torch.stack([torch.as_tensor(v, device=device).to(dtype).reshape(()) for v in values])
        dist.all_reduce(packed)
        return packed.tolist()
    on_device = [v.reshape(()) for v in values if isinstance(v, torch.Tensor)]
    read = iter(torch.stack(on_device).to(dtype).tolist() if on_device else ())
    return [next(read) if isinstance(v, torch.Tensor) else float(v) for v in values]
