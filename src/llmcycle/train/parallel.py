"""Parallelism applied from outside the model (torchtitan's rule): build, then wrap.

`wrap_model` returns the module the loop calls; the unwrapped model stays the one that is
checkpointed and evaluated. `no_sync` skips gradient synchronisation on all but the last
micro-step of an accumulation (the official DDP context, not a private flag).
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel as DDP


def wrap_model(model: torch.nn.Module, strategy: str, device: torch.device) -> torch.nn.Module:
    if strategy == "single":
        return model
    if strategy == "ddp":
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    raise ValueError(f"strategy {strategy!r} is not available yet; use single or ddp")


def no_sync(wrapped: torch.nn.Module, sync: bool):
    """Context for one micro-step: synchronise gradients only when `sync` is True."""
    if sync or not isinstance(wrapped, DDP):
        return contextlib.nullcontext()
    return wrapped.no_sync()
