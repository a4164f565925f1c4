"""Encoder-decoder transformer (span corruption, T5-like): read the input, write the target.

    idx (B, S) -> embeddings -> EncoderStack (bidirectional) -> memory (B, S, C)
    memory -> per decoder layer: cross-attention keys/values, projected once per input
    dec_idx (B, T) -> embeddings -> dec_layers x Block(causal self-attention, cross-attention, MLP)
                   -> norm -> head -> logits (B, T, V)

The family is the encoder's padding-only mask, plus cross-attention in the decoder's blocks. The
token embedding (and the position table, when learned) is shared by both stacks and, by
default, tied to the head. Decoding reuses the decoder's causal mask and a KV cache sized for
`cfg.dec_layers`; `cross_kv` is computed once per input and reused for every new token.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcycle.config import ModelConfig
from llmcycle.models.decoder import causal_mask
from llmcycle.models.encoder import EncoderStack, padding_mask
from llmcycle.models.layers import Block, Embeddings, init_weights, make_norm

MemoryKV = list[tuple[torch.Tensor, torch.Tensor]]  # per decoder layer: k, v (B, K, S, D)


class EncoderDecoderLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        assert cfg.family == "seq2seq", cfg.family
        self.cfg = cfg
        self.embed = Embeddings(cfg)  # shared by the encoder and the decoder
        self.encoder = EncoderStack(cfg, cfg.n_layer)
        self.decoder = nn.ModuleList(Block(cfg, cross=True) for _ in range(cfg.dec_layers))
        self.norm = make_norm(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.tok.weight
        init_weights(self, cfg)

    def encode(self, idx: torch.Tensor, src_pad: torch.Tensor | None = None) -> torch.Tensor:
        """idx: (B, S) input ids, src_pad: (B, S) True at right padding -> memory (B, S, C)."""
        x, rope = self.embed(idx, torch.arange(idx.shape[1], device=idx.device))
        return self.encoder(x, rope, src_pad)

    def cross_kv(self, memory: torch.Tensor) -> MemoryKV:
        """The cross-attention keys/values of every decoder layer, once per input."""
        return [block.cross_attn.project_kv(memory) for block in self.decoder]

    def decode(self, dec_idx, memory_kv: MemoryKV, src_pad=None, cache=None, last_only=False) -> torch.Tensor:
        """dec_idx: (B, T) target ids so far (or the new ones, with `cache`). Returns logits (B, T|1, V)."""
        T = dec_idx.shape[1]
        start = cache.pos if cache is not None else 0
        x, rope = self.embed(dec_idx, torch.arange(start, start + T, device=dec_idx.device))  # (B, T, C)
        mask = causal_mask(start, T, start + T, None, dec_idx.device) if start and T > 1 else None
        memory_mask = padding_mask(src_pad)  # (B, 1, 1, S) or None
        for i, block in enumerate(self.decoder):
            x = block(x, rope, mask, is_causal=mask is None and T > 1, cache=cache.layer(i) if cache is not None else None,
                      memory_kv=memory_kv[i], memory_mask=memory_mask)
        if cache is not None:
            cache.advance(T)
        x = self.norm(x)
        return self.head(x[:, -1:] if last_only else x)

    def forward(self, idx, dec_idx, targets=None, src_pad=None, cache=None, memory_kv=None, last_only=False):
        """idx: (B, S) corrupted input (ignored when memory_kv is given). dec_idx: (B, T) decoder input
        (start token + target shifted right). targets: (B, T) (-100 = ignore) -> also returns the loss.
        Returns (logits (B, T|1, V), loss or None)."""
        if memory_kv is None:
            memory_kv = self.cross_kv(self.encode(idx, src_pad))
        logits = self.decode(dec_idx, memory_kv, src_pad, cache, last_only)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss
