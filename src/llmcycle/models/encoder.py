"""Encoder-only transformer (masked LM, BERT-like): fill in masked tokens from both sides.

    idx (B, T) -> embeddings -> n_layer x Block(bidirectional self-attention, MLP) -> norm -> head -> logits (B, T, V)

The family is defined by the absence of a causal mask: every position attends to every other
one, except padding. `EncoderStack` (blocks + final norm) is also the encoder half of the
encoder-decoder (`encoder_decoder.py`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcycle.config import ModelConfig
from llmcycle.models.layers import Block, Embeddings, init_weights, make_norm


def padding_mask(pad: torch.Tensor | None) -> torch.Tensor | None:
    """pad (B, S) True at padding -> bool mask (B, 1, 1, S), True = may attend; None without padding.
    Every query (padding ones too, whose outputs are discarded) sees all real keys."""
    return None if pad is None else ~pad[:, None, None, :]


class EncoderStack(nn.Module):
    """Bidirectional blocks and a final norm: hidden states (B, S, C) -> contextual states (B, S, C)."""

    def __init__(self, cfg: ModelConfig, n_layer: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(n_layer))
        self.norm = make_norm(cfg)

    def forward(self, x: torch.Tensor, rope=None, pad: torch.Tensor | None = None) -> torch.Tensor:
        mask = padding_mask(pad)
        for block in self.blocks:
            x = block(x, rope, mask)  # no causal mask: the encoder's seam
        return self.norm(x)


class EncoderLM(nn.Module):
    """Masked-LM encoder: logits for every position; the objective decides where the loss counts."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        assert cfg.family == "encoder", cfg.family
        self.cfg = cfg
        self.embed = Embeddings(cfg)
        self.encoder = EncoderStack(cfg, cfg.n_layer)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.tok.weight
        init_weights(self, cfg)

    def forward(self, idx, targets=None, pad=None):
        """idx: (B, T) token ids (some replaced by the mask token). targets: (B, T) original ids at the
        chosen positions, -100 elsewhere. pad: (B, T) bool, True at right padding.
        Returns (logits (B, T, V), loss or None)."""
        T = idx.shape[1]
        x, rope = self.embed(idx, torch.arange(T, device=idx.device))  # (B, T, C)
        logits = self.head(self.encoder(x, rope, pad))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss
