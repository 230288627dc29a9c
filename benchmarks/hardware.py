"""What the benchmarks print first: the machine and the software they ran on."""
from __future__ import annotations

import os
import platform

import torch


def hardware(device: torch.device) -> str:
    """One line: CPU model, cores, torch threads, versions, device (and GPU name)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = (f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
            f"torch {torch.__version__}, Python {platform.python_version()}; device {device}")
    if device.type == "cuda":
        text += f" ({torch.cuda.get_device_name(device)})"
    return text
