"""Parallelism applied from outside the model (torchtitan's rule): build, then wrap; and the launcher.

    wrap_model(model, "single" | "ddp" | "fsdp", device)   the module the loop calls
    no_sync(wrapped, sync)                                  skip gradient sync on non-final micro-steps
    model_state_bytes(model, optimizer)                     bytes of params / grads / optimizer state this rank holds

DDP keeps a full replica per rank and all-reduces gradients. FSDP2 (`fully_shard`) shards every
parameter along dim 0 across the ranks, block by block and then the root; the root group holds
what no block owns: the token embedding, the final norm and the output head. That is where tied
embeddings must live: the head and the embedding are one `Parameter`, and sharding the embedding
or the head on their own would give that one parameter two owners. Sharding is done in place:
for FSDP the returned module *is* `model`, now holding `DTensor` shards, so the optimizer must be
built after wrapping (the loop does).

`fsdp_shard="full"` is ZeRO-3 (parameters are re-gathered in backward); `"grad_op"` keeps each
block's gathered parameters from forward to backward (`reshard_after_forward=False`): ZeRO-2-like
memory during the step, one all-gather fewer. On CUDA with a low-precision dtype, FSDP computes
in that dtype and reduces gradients in float32 (`MixedPrecisionPolicy`).
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

from llmcycle.checkpoint import is_fsdp
from llmcycle.runtime import DTYPES

STRATEGIES = ("single", "ddp", "fsdp")
FSDP_SHARDS = ("full", "grad_op")


def wrap_model(model: nn.Module, strategy: str, device: torch.device, fsdp_shard: str = "full",
               dtype: str = "float32") -> nn.Module:
    """Return the module to train: `model` itself (single), a DDP wrapper, or `model` sharded in place (fsdp)."""
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    if strategy == "single":
        if world_size > 1:
            raise ValueError(f"--strategy single with {world_size} processes would train {world_size} unrelated "
                             "replicas; use --strategy ddp or fsdp")
        return model
    if not dist.is_initialized():
        raise ValueError(f"--strategy {strategy} needs a process group: launch with torchrun or --nproc N")
    if strategy == "ddp":
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if strategy == "fsdp":
        return shard_model(model, device, fsdp_shard, dtype)
    raise ValueError(f"strategy {strategy!r} is not valid; choose one of {', '.join(STRATEGIES)}")


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated layers: the elements of each outermost ModuleList (decoder blocks, encoder
    blocks...); a ModuleList inside a block stays in that block's group."""
    blocks, lists = [], []
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and not any(name.startswith(f"{outer}.") for outer in lists):
            lists.append(name)
            blocks.extend(m)
    return blocks


def shard_model(model: nn.Module, device: torch.device, fsdp_shard: str = "full", dtype: str = "float32") -> nn.Module:
    """FSDP2: `fully_shard` each block, then the root (embedding, tied head, final norm)."""
    if fsdp_shard not in FSDP_SHARDS:
        raise ValueError(f"fsdp_shard={fsdp_shard!r} is not valid; choose one of {', '.join(FSDP_SHARDS)}")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    low = device.type == "cuda" and dtype != "float32"
    mp = MixedPrecisionPolicy(param_dtype=DTYPES[dtype], reduce_dtype=torch.float32) if low else MixedPrecisionPolicy()
    # full: blocks reshard after forward (None = True for blocks, False for the root, which backward needs first)
    reshard = None if fsdp_shard == "full" else False
    for block in _blocks(model):
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard, mp_policy=mp)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard, mp_policy=mp)
    return model


@contextlib.contextmanager
def _fsdp_sync(model, sync: bool):
    model.set_requires_gradient_sync(sync)  # FSDP2's no_sync: no reduce-scatter, gradients accumulate unsharded
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def no_sync(wrapped: nn.Module, sync: bool):
    """Context for one micro-step: synchronise gradients only when `sync` is True."""
    if sync:
        return contextlib.nullcontext()
    if isinstance(wrapped, DDP):
        return wrapped.no_sync()
    if is_fsdp(wrapped):
        return _fsdp_sync(wrapped, False)
    return contextlib.nullcontext()


# ------------------------------------------------------------------ memory held by this rank


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _nbytes(t: torch.Tensor) -> int:
    t = _local(t)
    return t.numel() * t.element_size()


def model_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes of parameters, gradients and optimizer state in the tensors this rank holds now
    (the local shard of a DTensor; a tied parameter once). DDP's bucket buffers are not counted."""
    params = list(model.parameters())  # deduplicated: a tied parameter once
    out = {"params": sum(_nbytes(p) for p in params),
           "grads": sum(_nbytes(p.grad) for p in params if p.grad is not None), "optimizer": 0}
    if optimizer is not None:
        out["optimizer"] = sum(_nbytes(v) for s in optimizer.state.values() for v in s.values()
                               if torch.is_tensor(v) and v.dim() > 0)  # the 'step' scalars are not model state
    return out
