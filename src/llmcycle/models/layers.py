"""The layer library every model family is built from.

Norms, rotary positions, attention (causal, bidirectional or cross), MLPs and the pre-norm
block. Self-attention is the heart of all three families; the only things that differ between
them are which keys a query may see (the mask) and whether a block also attends to an encoder
output (cross-attention). Shapes use B batch, T query length, S key length, H heads, K key/value
heads, D head dim, C model width.

Activation checkpointing (`cfg.recompute`, training only; the default "none" runs the plain
forward): "full" keeps only each block's input and reruns the block's forward during backward;
"selective" keeps the outputs of the block's matmuls and of attention (the costly ops) and reruns
the cheap ones (norms, rotary, activation functions, residual adds): torchtitan's op-level policy.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from llmcycle.config import ModelConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm (Llama): x / rms(x) * weight, computed in fp32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps).to(x.dtype)


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


class Rotary(nn.Module):
    """Rotary position embedding tables (Su et al. 2021), in the half-split layout of HF Llama.

    Holds cos/sin for every position up to max_seq_len; `forward(pos)` gathers the rows for
    the given positions. Llama-3 style frequency scaling is applied when configured.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        inv_freq = 1.0 / (cfg.rope_base ** (torch.arange(0, cfg.hd, 2, dtype=torch.float32) / cfg.hd))
        if cfg.rope_scaling:
            inv_freq = _llama3_scaled(inv_freq, cfg.rope_scaling)
        t = torch.arange(cfg.max_seq_len, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)  # (max_seq_len, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (max_seq_len, D)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # pos: (T,) shared by the batch, or (B, T) per row -> cos/sin broadcastable to (B, H, T, D)
        cos, sin = self.cos[pos], self.sin[pos]
        if pos.dim() == 2:
            return cos.unsqueeze(1), sin.unsqueeze(1)
        return cos, sin


def _llama3_scaled(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama-3.1 rope scaling: stretch low frequencies, keep high ones, blend in between."""
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind != "llama3":
        raise ValueError(f"rope_scaling type {kind!r} is not supported; supported: 'llama3', 'linear'")
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_ctx = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_ctx / wavelen - low) / (high - low)
    scaled = torch.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)
    mid = (wavelen <= old_ctx / low) & (wavelen >= old_ctx / high)
    return torch.where(mid, (1 - smooth) * inv_freq / factor + smooth * inv_freq, scaled)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, D); rotate the two halves of the head dim as a complex pair.
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    """Multi-head / grouped-query attention through `F.scaled_dot_product_attention`.

    Self-attention projects q, k, v from `x` with one fused matmul. Cross-attention (`cross=True`)
    takes queries from `x` and keys/values from the encoder output (`memory_kv`, projected once
    per input by `project_kv`). The mask decides the family: causal for decoders, none (or
    padding only) for encoders.
    """

    def __init__(self, cfg: ModelConfig, cross: bool = False) -> None:
        super().__init__()
        self.n_head, self.n_kv, self.hd = cfg.n_head, cfg.kv_heads, cfg.hd
        q_dim, kv_dim = self.n_head * self.hd, self.n_kv * self.hd
        if cross:
            self.q_proj = nn.Linear(cfg.d_model, q_dim, bias=cfg.bias)
            self.kv_proj = nn.Linear(cfg.d_model, 2 * kv_dim, bias=cfg.bias)
        else:
            self.qkv_proj = nn.Linear(cfg.d_model, q_dim + 2 * kv_dim, bias=cfg.bias)
        self.o_proj = nn.Linear(q_dim, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values of the encoder output (B, S, C) -> 2 x (B, K, S, D)."""
        B, S, _ = memory.shape
        kv = self.kv_proj(memory).view(B, S, 2, self.n_kv, self.hd)
        return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)

    def forward(self, x, rope=None, mask=None, is_causal=False, cache=None, memory_kv=None):
        """x: (B, T, C). rope: (cos, sin) for the query positions, or None.
        mask: bool (B|1, 1, T, S), True = may attend. cache: one layer of a KV cache; it stores
        this step's keys/values and returns all keys/values so far. memory_kv: cross-attention
        keys/values from `project_kv`."""
        B, T, _ = x.shape
        if memory_kv is not None:
            q = self.q_proj(x).view(B, T, self.n_head, self.hd).transpose(1, 2)  # (B, H, T, D)
            k, v = memory_kv  # (B, K, S, D)
        else:
            # (B, T, (H + 2K) D) -> (B, H + 2K, T, D) -> q (B, H, T, D), k, v (B, K, T, D): three ops, not
            # seven (the same views as splitting first; one decoding step runs this per layer per token)
            qkv = self.qkv_proj(x).view(B, T, self.n_head + 2 * self.n_kv, self.hd).transpose(1, 2)
            q, k, v = qkv.split((self.n_head, self.n_kv, self.n_kv), dim=1)
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            if cache is not None:
                k, v = cache.update(k, v)  # (B, K, S, D), S = cached + T
        low = q.dtype if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) else None
        if low:  # CPU's flash kernel is ~4x slower in bf16 than in fp32 (its backward above all): attend in
            with torch.autocast("cpu", enabled=False):  # fp32, where autocast would cast back to bf16
                y = self._attend(q.float(), k.float(), v.float(), mask, is_causal, B, T).to(low)
            return self.o_proj(y)
        return self.o_proj(self._attend(q, k, v, mask, is_causal, B, T))

    def _attend(self, q, k, v, mask, is_causal, B, T):
        """SDPA over (B, H, T, D) queries and (B, K, S, D) keys/values -> (B, T, H * D)."""
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=self.n_kv != self.n_head,
        )  # (B, H, T, D)
        return y.transpose(1, 2).reshape(B, T, self.n_head * self.hd)


class MLP(nn.Module):
    """SwiGLU (Llama: down(silu(gate(x)) * up(x)), gate and up fused) or GELU (GPT: down(gelu(up(x))))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = cfg.mlp
        n_up = 2 * cfg.ffn if cfg.mlp == "swiglu" else cfg.ffn  # swiglu: gate and up in one matmul
        self.up_proj = nn.Linear(cfg.d_model, n_up, bias=cfg.bias)
        self.down_proj = nn.Linear(cfg.ffn, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            gate, up = self.up_proj(x).chunk(2, dim=-1)
            if not torch.is_grad_enabled():  # inference: the same math in place, no (B, T, ffn) temporaries
                return self.down_proj(F.silu(gate, inplace=True).mul_(up))
            return self.down_proj(F.silu(gate) * up)
        approximate = "tanh" if self.kind == "gelu_tanh" else "none"
        return self.down_proj(F.gelu(self.up_proj(x), approximate=approximate))


_ATEN = torch.ops.aten
# Ops whose outputs selective recomputation keeps: matmuls and attention kernels (everything else is rerun).
_SAVED_OPS = {_ATEN.mm.default, _ATEN.addmm.default, _ATEN.bmm.default, _ATEN.baddbmm.default,
              _ATEN._scaled_dot_product_flash_attention_for_cpu.default,
              _ATEN._scaled_dot_product_flash_attention.default,
              _ATEN._scaled_dot_product_efficient_attention.default,
              _ATEN._scaled_dot_product_cudnn_attention.default}


def _selective_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)) [+ cross(norm(x), memory)] + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, cross: bool = False) -> None:
        super().__init__()
        self.recompute = cfg.recompute
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg)
        if cross:
            self.cross_norm = make_norm(cfg)
            self.cross_attn = Attention(cfg, cross=True)
        self.mlp_norm = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope=None, mask=None, is_causal=False, cache=None, memory_kv=None, memory_mask=None):
        if self.recompute == "none" or cache is not None or not (self.training and torch.is_grad_enabled()):
            return self._forward(x, rope, mask, is_causal, cache, memory_kv, memory_mask)
        # the checkpointed forward replays dropout with the saved RNG state, so the rerun is the same
        context = partial(create_selective_checkpoint_contexts, _selective_policy) if self.recompute == "selective" else None
        kw = {"context_fn": context} if context else {}
        return checkpoint(self._forward, x, rope, mask, is_causal, None, memory_kv, memory_mask, use_reentrant=False, **kw)

    def _forward(self, x, rope, mask, is_causal, cache, memory_kv, memory_mask):
        drop = self.drop if self.training else _same  # eval: dropout is the identity, skip its call
        x = x + drop(self.attn(self.attn_norm(x), rope, mask, is_causal, cache))
        if memory_kv is not None:
            x = x + drop(self.cross_attn(self.cross_norm(x), mask=memory_mask, memory_kv=memory_kv))
        return x + drop(self.mlp(self.mlp_norm(x)))


class Embeddings(nn.Module):
    """Token embeddings plus learned positions (GPT) or rotary tables (Llama)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.pos_emb == "learned":
            self.pos = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        else:
            self.rotary = Rotary(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.max_seq_len = cfg.max_seq_len

    def forward(self, idx: torch.Tensor, pos: torch.Tensor, check: bool = True):
        """idx: (B, T) token ids, pos: (T,) or (B, T) positions -> x (B, T, C), rope tables or None.
        check=False skips the context-length check (a compiled step: the caller checked already)."""
        if check and int(pos.max()) >= self.max_seq_len:
            raise ValueError(
                f"position {int(pos.max())} is past the model context ({self.max_seq_len} tokens); "
                "shorten the input or use left truncation"
            )
        x = self.tok(idx)
        drop = self.drop if self.training else _same
        if hasattr(self, "pos"):
            return drop(x + self.pos(pos)), None
        return drop(x), self.rotary(pos)


def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """The one place weights are initialised (GPT-2 / nanoGPT scheme).

    - every Linear weight and Embedding: normal(0, init_std)
    - residual output projections (attention o_proj, MLP down_proj): normal(0, init_std / sqrt(2 * layers))
      so the residual stream's variance does not grow with depth
    - biases: zero; norm weights: one (LayerNorm bias: zero)
    """
    n_res = 2 * (cfg.n_layer + (cfg.dec_layers if cfg.family == "seq2seq" else 0))
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            std = cfg.init_std / math.sqrt(n_res) if name.endswith(("o_proj", "down_proj")) else cfg.init_std
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, cfg.init_std)
        elif isinstance(m, (RMSNorm, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
