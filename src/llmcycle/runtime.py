"""Process-level plumbing: device and dtype choice, seeding, distributed init, rank-0 printing,
the measured matmul peak and peak memory. (Atomic file writes live in `llmcycle.atomic`.)
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import time
from datetime import timedelta


import numpy as np
import torch
import torch.distributed as dist

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def autocast(device: torch.device, dtype: str):
    """Mixed precision context; fp32 (the CPU default) is a no-op."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- distributed


def world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) when not launched by it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return world()[0] == 0


def print0(*args, **kwargs) -> None:
    if is_main():
        print(*args, **kwargs, flush=True)


def init_distributed(device: torch.device, backend: str | None = None, timeout_s: float = 300.0,
                     alone: bool = False) -> bool:
    """Initialise the default process group when launched by torchrun (or, with `alone`, a group of
    one process for ddp/fsdp without torchrun). Returns True if distributed. `timeout_s` bounds how
    long a collective waits for a rank that hangs or died, so a run stops instead of hanging."""
    if dist.is_initialized() or (world()[2] == 1 and not alone):
        return dist.is_initialized()
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(f"backend nccl needs CUDA devices but the device is {device}; use --backend gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=timeout_s)
    if world()[2] == 1 and "MASTER_ADDR" not in os.environ:  # not under torchrun: an in-memory store
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    else:
        dist.init_process_group(backend=backend, timeout=timeout)
    return True


def destroy_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


_PEAK: dict[str, float] = {}


def matmul_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """Achievable matmul FLOP/s on this device, measured once (a 1024^3 matmul for ~0.2 s).
    The MFU the loop prints is relative to this measured peak, not to a datasheet."""
    key = f"{device}-{dtype}"
    if key not in _PEAK:
        n = 1024
        # values are irrelevant; drawing them from the global RNG would make a run's dropout and data
        # depend on whether the peak had been measured earlier in the same process
        a = torch.ones(n, n, device=device, dtype=dtype)
        b = torch.ones(n, n, device=device, dtype=dtype)
        a @ b  # warm-up
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.2:
            a @ b
            reps += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        _PEAK[key] = 2 * n**3 * reps / (time.perf_counter() - t0)
    return _PEAK[key]


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
