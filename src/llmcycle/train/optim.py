"""AdamW with weight-decay groups, and the warmup + cosine learning-rate schedule.

Matrices (dim >= 2: linear weights, embeddings) are decayed; vectors (norm weights, biases)
are not, as in GPT-2/nanoGPT. The schedule is a pure function of the step so a resumed run
gets exactly the learning rate it would have had.
"""

from __future__ import annotations

import math

import torch

from llmcycle.config import TrainConfig


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for the whole update of a group (CPU and CUDA; 1.1 vs 3.2 ms a step for the
    # 0.8 M-parameter nanoGPT shape on CPU); sharded (DTensor) parameters keep the foreach kernels
    fused = all(type(p) is torch.nn.Parameter and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **({"fused": True} if fused else {"foreach": True}))


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr over warmup_steps, then cosine decay to lr * min_lr_ratio at total_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    min_lr = cfg.lr * cfg.min_lr_ratio
    return min_lr + 0.5 * (cfg.lr - min_lr) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
