"""The sweep's model ladder: one documented width/depth rule, so a model size is one integer.

    rung k (k >= 2)  ->  d_model = 16 k, n_layer = ceil(k / 2), n_head = k (head_dim 16),
                         SwiGLU MLP (8/3 d rounded up to 64), RoPE, RMSNorm, no biases, tied embeddings

The aspect ratio d_model / n_layer stays at 32 (24 on odd rungs), as nanochat's single depth dial
keeps it fixed (at 64, GPU scale); Kaplan et al. 2020 (Fig. 5) found loss depends only weakly on the
aspect ratio over a wide range. Half-steps in width make neighbouring rungs ~1.4-2x apart in
parameters rather than the 2-3x of whole layers, which an IsoFLOP parabola needs at tiny scale. Parameter counts come from the
planner's analytic count (plan/shape.py), which tests/test_plan.py checks equals the built model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmcycle.config import ModelConfig
from llmcycle.plan.compute import flops_per_token
from llmcycle.plan.shape import from_config, non_embedding_params, param_groups

WIDTH_STEP = 16  # d_model per rung; also the head dimension
MIN_RUNG, MAX_RUNG = 2, 96


@dataclass(frozen=True)
class Rung:
    """One model of the ladder and its sizes."""

    k: int  # rung index
    model: ModelConfig
    params: int  # every parameter, the tied embedding once (Chinchilla's count)
    non_embedding: int  # Kaplan's count: without token embeddings
    flops_per_token: float  # training matmul FLOPs per token at the sweep's seq_len (6N + attention)


def model_for_rung(k: int, vocab_size: int, seq_len: int) -> ModelConfig:
    if not MIN_RUNG <= k <= MAX_RUNG:
        raise ValueError(f"rung must be in {MIN_RUNG}..{MAX_RUNG}, got {k}")
    return ModelConfig(n_layer=math.ceil(k / 2), d_model=WIDTH_STEP * k, n_head=k, vocab_size=vocab_size,
                       max_seq_len=seq_len)


def rung(k: int, vocab_size: int, seq_len: int) -> Rung:
    model = model_for_rung(k, vocab_size, seq_len)
    shape = from_config(model)
    return Rung(k, model, param_groups(shape)["total"], non_embedding_params(shape),
                float(flops_per_token(shape, seq_len)))


def ladder(vocab_size: int, seq_len: int) -> list[Rung]:
    return [rung(k, vocab_size, seq_len) for k in range(MIN_RUNG, MAX_RUNG + 1)]


def spread(center: float, count: int, rungs: list[Rung], width: float = 16.0) -> list[Rung]:
    """`count` distinct rungs around `center` parameters: evenly spaced (by index, so roughly
    geometrically) among the rungs within a factor sqrt(width) either side; where fewer rungs lie
    in that window, the `count` rungs nearest to the centre in log N."""
    if count < 1:
        raise ValueError(f"--sizes must be >= 1, got {count}")
    if count > len(rungs):
        raise ValueError(f"--sizes {count} exceeds the {len(rungs)} models of the ladder")
    dist = [abs(math.log(r.params / center)) for r in rungs]
    window = [i for i, d in enumerate(dist) if d <= math.log(width) / 2]
    if len(window) < count:
        return [rungs[i] for i in sorted(sorted(range(len(rungs)), key=dist.__getitem__)[:count])]
    step = (len(window) - 1) / (count - 1) if count > 1 else 0
    picked = [window[round(k * step)] for k in range(count)] if count > 1 else [min(window, key=dist.__getitem__)]
    return [rungs[i] for i in picked]
