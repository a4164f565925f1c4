"""Hugging Face tensor names <-> llmcycle's `DecoderLM` state dict (the config is `hf_config.py`'s).

Two architectures map exactly onto our decoder:

    llama (Llama 2/3, SmolLM/SmolLM2, Mistral-style GQA)   rope + rmsnorm + swiglu, no bias
    gpt2                                                  learned positions + layernorm + gelu_tanh + bias, tied

Our layers fuse what Hugging Face keeps apart (see `models/layers.py`): attention has ONE `qkv_proj`
whose rows are [q (H*D) | k (K*D) | v (K*D)], and the SwiGLU MLP has ONE `up_proj` whose rows are
[gate (ffn) | up (ffn)]. GPT-2 stores its projections as `Conv1D` (in, out) matrices, i.e. the
transpose of an `nn.Linear` weight. Each `Rule` below names one of our tensors, the Hugging Face
tensors it is made of, and how (`cat` rows, or `t`ranspose); export applies the rules backwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from llmcycle.config import ModelConfig
from llmcycle.hub.folder import HF_CONFIG
from llmcycle.models import build_model

# Buffers some checkpoints carry that hold no weights (recomputed by the model).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "attn.bias", "attn.masked_bias")


# ------------------------------------------------------------------ tensors


@dataclass(frozen=True)
class Rule:
    ours: str
    theirs: tuple[str, ...]
    how: str = "same"  # same | cat (rows, split back by `sizes`) | t (transpose: GPT-2 Conv1D)
    sizes: tuple[int, ...] = ()


def _llama_rules(cfg: ModelConfig) -> list[Rule]:
    q, kv = cfg.n_head * cfg.hd, cfg.kv_heads * cfg.hd
    rules = [Rule("embed.tok.weight", ("model.embed_tokens.weight",)), Rule("norm.weight", ("model.norm.weight",))]
    if not cfg.tie_embeddings:
        rules.append(Rule("head.weight", ("lm_head.weight",)))
    for i in range(cfg.n_layer):
        b, a, m = f"blocks.{i}", f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp"
        rules += [Rule(f"{b}.attn_norm.weight", (f"model.layers.{i}.input_layernorm.weight",)),
                  Rule(f"{b}.mlp_norm.weight", (f"model.layers.{i}.post_attention_layernorm.weight",))]
        for p in ("weight", "bias") if cfg.bias else ("weight",):
            rules += [Rule(f"{b}.attn.qkv_proj.{p}", (f"{a}.q_proj.{p}", f"{a}.k_proj.{p}", f"{a}.v_proj.{p}"),
                           "cat", (q, kv, kv)),
                      Rule(f"{b}.attn.o_proj.{p}", (f"{a}.o_proj.{p}",)),
                      Rule(f"{b}.mlp.up_proj.{p}", (f"{m}.gate_proj.{p}", f"{m}.up_proj.{p}"), "cat", (cfg.ffn, cfg.ffn)),
                      Rule(f"{b}.mlp.down_proj.{p}", (f"{m}.down_proj.{p}",))]
    return rules


def _gpt2_rules(cfg: ModelConfig) -> list[Rule]:
    rules = [Rule("embed.tok.weight", ("transformer.wte.weight",)), Rule("embed.pos.weight", ("transformer.wpe.weight",)),
             Rule("norm.weight", ("transformer.ln_f.weight",)), Rule("norm.bias", ("transformer.ln_f.bias",))]
    for i in range(cfg.n_layer):
        b, h = f"blocks.{i}", f"transformer.h.{i}"
        for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            rules += [Rule(f"{b}.{ours}.{p}", (f"{h}.{theirs}.{p}",)) for p in ("weight", "bias")]
        for ours, theirs in (("attn.qkv_proj", "attn.c_attn"), ("attn.o_proj", "attn.c_proj"),
                             ("mlp.up_proj", "mlp.c_fc"), ("mlp.down_proj", "mlp.c_proj")):
            rules += [Rule(f"{b}.{ours}.weight", (f"{h}.{theirs}.weight",), "t"),
                      Rule(f"{b}.{ours}.bias", (f"{h}.{theirs}.bias",))]
    return rules


def rules_for(cfg: ModelConfig, arch: str) -> list[Rule]:
    return _llama_rules(cfg) if arch == "llama" else _gpt2_rules(cfg)


def _aliases(name: str) -> tuple[str, ...]:
    """Spellings of one tensor name across checkpoints (with or without the base-model prefix)."""
    for prefix in ("model.", "transformer."):
        if name.startswith(prefix):
            return name, name[len(prefix):]
    return (name,)


def expected_shapes(cfg: ModelConfig) -> dict[str, torch.Size]:
    """Every tensor of our model for `cfg`, measured on the meta device (no memory)."""
    with torch.device("meta"):
        model = build_model(cfg)
    return {k: v.shape for k, v in model.state_dict().items()}


def to_llmcycle(names: list[str], get: Callable[[str], torch.Tensor], cfg: ModelConfig, arch: str,
                where: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """Our state dict from a checkpoint's tensors: `names` lists them, `get(name)` loads one.

    Raises ValueError naming missing tensors, unexpected tensors and shape mismatches."""
    present = set(names)
    resolve = {alias: n for n in names for alias in _aliases(n)}
    shapes = expected_shapes(cfg)
    rules = rules_for(cfg, arch)
    find = lambda t: next((resolve[a] for a in _aliases(t) if a in resolve), None)  # noqa: E731
    missing = [t for r in rules for t in r.theirs if find(t) is None]
    if missing:
        raise ValueError(f"{where} is missing {len(missing)} tensor(s) of a {arch} model with {cfg.n_layer} layers: "
                         f"{missing[:6]}")
    used, out = set(), {}
    for r in rules:
        keys = [find(t) for t in r.theirs]
        used.update(keys)
        parts = [get(k) for k in keys]
        tensor = parts[0].t() if r.how == "t" else torch.cat(parts, 0) if r.how == "cat" else parts[0]
        if tensor.shape != shapes[r.ours]:
            got = [tuple(p.shape) for p in parts]
            raise ValueError(f"shape mismatch: {', '.join(keys)} {got} cannot fill {r.ours} {tuple(shapes[r.ours])} "
                             f"of the model that {HF_CONFIG} describes")
        out[r.ours] = tensor.contiguous()
    if cfg.tie_embeddings:
        out["head.weight"] = out["embed.tok.weight"]
        used.update(n for n in names if n.endswith("lm_head.weight"))
    extra = sorted(n for n in present - used if not n.endswith(IGNORED_SUFFIXES))
    if extra:
        raise ValueError(f"{where} has {len(extra)} tensor(s) a {arch} model with {cfg.n_layer} layers does not use: "
                         f"{extra[:6]}; is {HF_CONFIG} the right one for these weights?")
    return out


def to_hf(state: Mapping[str, torch.Tensor], cfg: ModelConfig, arch: str) -> dict[str, torch.Tensor]:
    """Hugging Face-named tensors (contiguous, unshared) from our state dict."""
    out = {}
    for r in rules_for(cfg, arch):
        t = state[r.ours]
        if r.how == "t":
            out[r.theirs[0]] = t.t()
        elif r.how == "cat":
            out.update(zip(r.theirs, t.split(list(r.sizes), 0)))
        else:
            out[r.theirs[0]] = t
    return {k: v.detach().contiguous().clone() for k, v in out.items()}
