"""Parameters and FLOPs measured from the built model itself (nanochat's practice).

Build the model on the `meta` device (no memory), walk its parameters and linear layers, and
assert the groups add up. The planner, the training loop's MFU and the report all read these
numbers, so the model is the single source of truth.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from llmcycle.config import FAMILIES, FAMILY_OPTIONS, ModelConfig
from llmcycle.data.objectives import seq2seq_lengths
from llmcycle.models import build_model

GROUPS = ("embedding", "position", "attention", "mlp", "norm", "head")


def meta_model(cfg: ModelConfig) -> nn.Module:
    with torch.device("meta"):
        return build_model(cfg)


def _group(name: str) -> str:
    if ".tok." in f".{name}" or name.endswith("embed.tok.weight"):
        return "embedding"
    if "embed.pos" in name:
        return "position"
    if "norm" in name:
        return "norm"
    if "attn" in name:
        return "attention"
    if "mlp" in name:
        return "mlp"
    if name.startswith("head") or "lm_head" in name:
        return "head"
    raise AssertionError(f"parameter {name} belongs to no accounting group")


def param_groups(model: nn.Module) -> dict[str, int]:
    """Parameter count per group (tied weights counted once, in `embedding`), plus 'total'."""
    counts = dict.fromkeys(GROUPS, 0)
    for name, p in model.named_parameters():  # named_parameters skips the tied duplicate
        counts[_group(name)] += p.numel()
    counts["total"] = sum(counts[g] for g in GROUPS)
    assert counts["total"] == sum(p.numel() for p in model.parameters()), "accounting groups do not add up"
    return counts


def count_params(cfg: ModelConfig) -> dict[str, int]:
    return param_groups(meta_model(cfg))


def matmul_params(model: nn.Module) -> int:
    """Weights that take part in a matmul per token: every Linear (the head too, even when tied)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def stack_params(model: nn.Module) -> dict[str, int]:
    """Parameters per stack: shared (embeddings, head), encoder, decoder (its cross-attention
    included), and cross_attention on its own. A decoder-only model has no encoder and vice versa."""
    out = dict.fromkeys(("shared", "encoder", "decoder", "cross_attention"), 0)
    for name, p in model.named_parameters():
        stack = "encoder" if name.startswith("encoder.") else "shared" if name.startswith(("embed.", "head.")) else "decoder"
        out[stack] += p.numel()
        out["cross_attention"] += p.numel() if ".cross_attn." in name else 0
    return out


def attention_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """Forward FLOPs per token of QK^T and AV over a full (non-causally-skipped) T x T score matrix:
    2 matmuls x 2 FLOPs x seq_len x (n_head * head_dim), per attention layer."""
    return 4 * seq_len * cfg.n_head * cfg.hd * cfg.n_layer


def seq2seq_forward_flops(cfg: ModelConfig, seq_len: int, model: nn.Module) -> int:
    """Forward FLOPs of one span-corruption example: the encoder and the cross-attention key/value
    projections see its S input tokens, the rest of the decoder its T target tokens; attention
    scores cost 4 H D per (query, key) pair: S x S encoder, T x T decoder, T x S cross."""
    S, T = seq2seq_lengths(cfg, seq_len)
    linear = sum(m.weight.numel() * (S if name.startswith("encoder.") or name.endswith("cross_attn.kv_proj") else T)
                 for name, m in model.named_modules() if isinstance(m, nn.Linear))
    scores = 4 * cfg.n_head * cfg.hd * (S * S * cfg.n_layer + (T * T + T * S) * cfg.dec_layers)
    return 2 * linear + scores


def flops_per_token(cfg: ModelConfig, seq_len: int, model: nn.Module | None = None, training: bool = True) -> int:
    """FLOPs per token: forward = 2 x matmul weights + attention scores; training = 3 x forward
    (backward costs twice the forward). Equals 6N + 12 L H D T for a decoder (Kaplan/PaLM), and
    for the encoder too (its head runs on every position). For seq2seq a token is one of the
    seq_len encoder input tokens, and the decoder's work on the shorter target is spread over them."""
    model = model if model is not None else meta_model(cfg)
    if cfg.family == "seq2seq":
        fwd = round(seq2seq_forward_flops(cfg, seq_len, model) / seq_len)
    else:
        fwd = 2 * matmul_params(model) + attention_flops_per_token(cfg, seq_len)
    return 3 * fwd if training else fwd


def family_costs(cfg: ModelConfig, seq_len: int) -> dict[str, dict[str, int]]:
    """Parameters and training FLOPs per token of all three families at cfg's width and depth."""
    unset = {name: None for names in FAMILY_OPTIONS.values() for name in names}
    out = {}
    for family in FAMILIES:
        c = cfg if family == cfg.family else dataclasses.replace(cfg, family=family, **unset)
        model = meta_model(c)
        out[family] = {"params": param_groups(model)["total"], "flops_per_token": flops_per_token(c, seq_len, model)}
    return out


def measure_flops(model: nn.Module, idx: torch.Tensor, targets: torch.Tensor | None = None, backward: bool = True,
                  **inputs) -> int:
    """FLOPs counted by `torch.utils.flop_counter.FlopCounterMode` for one forward (and backward) pass
    of `model(idx, targets=targets, **inputs)` (e.g. dec_idx=... for seq2seq).

    SDPA runs on its math backend here: the fused CPU flash kernel is invisible to the counter,
    which would silently drop the attention-score FLOPs."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = model(idx, targets=targets, **inputs)
        if backward:
            loss.backward()
    return counter.get_total_flops()
