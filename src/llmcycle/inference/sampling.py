"""Choosing the next token: a pure function of the logits and an explicit random generator.

    temperature == 0      -> argmax (greedy)
    top_k = k             -> keep the k most likely tokens
    top_p = p             -> keep the smallest set of most likely tokens whose mass reaches p
                             (always at least one token)
Filters apply in that order (temperature, top-k, top-p), as in Hugging Face and litgpt.
`SamplingConfig` (the settings, torch-free) lives in `config.py`.
"""

from __future__ import annotations

import torch

from llmcycle.inference.config import SamplingConfig


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """logits (B, V): everything below the k-th largest becomes -inf."""
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """logits (B, V): keep the smallest most-likely set whose probability mass reaches p."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # mass of the tokens strictly more likely than this one
    drop_sorted = mass_before >= p  # the first token always has mass_before 0, so it stays
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> next token ids (B,)."""
    if cfg.temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / cfg.temperature
    if cfg.top_k is not None:
        logits = filter_top_k(logits, cfg.top_k)
    if cfg.top_p is not None and cfg.top_p < 1.0:
        logits = filter_top_p(logits, cfg.top_p)
    # inverse-CDF draw: the same distribution as torch.multinomial(probs, 1), ~50x faster for one
    # sample from a large vocabulary on CPU (multinomial: ~2.7 ms per 49k-token row, this ~0.05 ms).
    # u < the total mass, and `right=True` lands on the first token whose cumulative mass exceeds u,
    # so a token of probability 0 (cumulative mass flat) is never drawn.
    cdf = logits.softmax(-1).cumsum(-1)  # (B, V)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
