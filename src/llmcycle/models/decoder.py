"""Decoder-only transformer (causal LM, GPT/Llama-like): predict the next token.

    idx (B, T) -> embeddings -> n_layer x Block(causal self-attention, MLP) -> norm -> head -> logits (B, T, V)

The family is defined by the causal mask: position t attends to positions <= t only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcycle.config import ModelConfig
from llmcycle.models.layers import Block, Embeddings, init_weights, make_norm


def causal_mask(start: int, T: int, S: int, pad: torch.Tensor | None, device) -> torch.Tensor:
    """Bool mask (B|1, 1, T, S), True = may attend. Query t sits in cache slot start + t and sees
    key slots s <= start + t that are not padding (pad: (B, S), True where a slot is padding).
    Slots, not position ids, decide causality, so left-padded rows stay causal."""
    q_slot = torch.arange(start, start + T, device=device)
    mask = torch.arange(S, device=device)[None, :] <= q_slot[:, None]  # (T, S)
    mask = mask[None]  # (1, T, S)
    if pad is not None:
        mask = mask & ~pad[:, None, :S]  # (B, T, S)
        # A padding query that sees no key would make SDPA return NaN; let it see its own slot
        # (its output is discarded).
        mask = mask | (~mask.any(-1, keepdim=True) & (torch.arange(S, device=device) == q_slot[:, None]))
    return mask.unsqueeze(1)


def slot_mask(slot: torch.Tensor, S: int, pad: torch.Tensor | None) -> torch.Tensor:
    """Bool mask (B|1, 1, 1, S) for one query in cache slot `slot` (a (1,) tensor): it sees the
    written slots s <= slot that are not padding (pad: (B, S), True at padding)."""
    mask = torch.arange(S, device=slot.device)[None, :] <= slot  # (1, S)
    if pad is not None:
        mask = mask & ~pad  # (B, S)
    return mask[:, None, None, :]


class DecoderLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        assert cfg.family == "decoder", cfg.family
        self.cfg = cfg
        self.embed = Embeddings(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = make_norm(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.tok.weight
        init_weights(self, cfg)

    def forward(self, idx, targets=None, cache=None, pos=None, pad=None, last_only=False, attn_mask=None):
        """idx: (B, T) token ids. targets: (B, T) next tokens (-100 = ignore) -> also returns the loss.
        cache: KVCache for incremental decoding. pos: (T,) or (B, T) positions (default: cache.pos + arange(T)).
        pad: (B, S) bool, True where a key position is left padding. last_only: logits of the last position only.
        attn_mask: (B, 1, T, T) bool, True = may attend, replacing the causal mask (packed fine-tuning
        examples: block-diagonal causal, see finetune/data.py). Returns (logits (B, T|1, V), loss or None)."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        check = pos is not None  # default positions end at start + T - 1: checked here, without a device sync
        if pos is None:
            if start + T > self.cfg.max_seq_len:
                raise ValueError(f"position {start + T - 1} is past the model context ({self.cfg.max_seq_len} tokens); "
                                 "shorten the input or use left truncation")
            pos = torch.arange(start, start + T, device=idx.device)
        x, rope = self.embed(idx, pos, check=check)  # (B, T, C)
        # Training and a first prefill use SDPA's causal kernel; a single decode step sees every
        # cached key; anything else (padding, a chunk after a cached prefix) needs an explicit mask.
        mask = causal_mask(start, T, start + T, pad, idx.device) if pad is not None or (start and T > 1) else None
        if attn_mask is not None:
            assert cache is None and pad is None, "attn_mask is for training and scoring without a cache"
            mask = attn_mask
        for i, block in enumerate(self.blocks):
            x = block(x, rope, mask, is_causal=mask is None and T > 1,
                      cache=cache.layer(i) if cache is not None else None)
        if cache is not None:
            cache.advance(T)
        x = self.norm(x)
        if last_only:
            x = x[:, -1:]
        logits = self.head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def step(self, idx: torch.Tensor, pos: torch.Tensor, cache, slot: torch.Tensor,
             pad: torch.Tensor | None = None) -> torch.Tensor:
        """One decoding step with the same shapes at every position, so `torch.compile` makes one graph.
        idx: (B, 1) new tokens, pos: (B, 1) or (1,) their position ids, slot: (1,) the cache slot they
        fill, pad: (B, cache.max_len) padding mask. Attends over the whole cache; the mask hides the
        slots not yet written. The caller advances nothing: the slot is the position in the cache.
        Returns logits (B, 1, V), equal to `forward`'s for the same token."""
        x, rope = self.embed(idx, pos, check=False)  # (B, 1, C); generate_ids checked the context length
        mask = slot_mask(slot, cache.max_len, pad)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, mask, cache=cache.at(i, slot))
        return self.head(self.norm(x))
