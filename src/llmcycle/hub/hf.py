"""Hugging Face `config.json` and tensor names <-> llmcycle's `ModelConfig` and `DecoderLM` state dict.

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

LLAMA_TYPES = ("llama", "mistral")
SUPPORTED = ", ".join(LLAMA_TYPES + ("gpt2",))
# Buffers some checkpoints carry that hold no weights (recomputed by the model).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "attn.bias", "attn.masked_bias")


def architecture(hf: dict) -> str:
    """'llama' or 'gpt2' for a Hugging Face config dict, or a ValueError naming what it is."""
    mt = hf.get("model_type")
    if mt in LLAMA_TYPES:
        return "llama"
    if mt == "gpt2":
        return "gpt2"
    raise ValueError(f"unsupported architecture: model_type={mt!r} (architectures={hf.get('architectures')}); "
                     f"llmcycle imports these model types: {SUPPORTED}")


# ------------------------------------------------------------------ config


def _rope(hf: dict) -> tuple[float, dict | None]:
    """(rope theta, our rope_scaling) from either the v4 keys (rope_theta, rope_scaling) or v5's rope_parameters."""
    params = hf.get("rope_parameters") or {}
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    scaling = hf.get("rope_scaling") or params
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return theta, None
    if kind == "linear":
        return theta, {"rope_type": "linear", "factor": float(scaling["factor"])}
    if kind == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        return theta, {"rope_type": "llama3", **{k: scaling[k] for k in keys}}
    raise ValueError(f"rope scaling type {kind!r} is not supported; llmcycle supports 'default', 'linear' and 'llama3'")


def _llama_config(hf: dict) -> dict:
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act={hf['hidden_act']!r} is not supported for llama models; only 'silu' (SwiGLU)")
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("partial rotary embeddings (partial_rotary_factor < 1) are not supported")
    attn_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    if attn_bias != mlp_bias:
        raise ValueError(f"attention_bias={attn_bias} with mlp_bias={mlp_bias} is not supported: "
                         "llmcycle's `bias` puts biases on every linear layer or on none")
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    kv = hf.get("num_key_value_heads") or h
    head_dim = hf.get("head_dim") or d // h
    context = hf.get("max_position_embeddings", 2048)
    if hf.get("sliding_window"):  # full attention equals sliding-window attention inside the window
        context = min(context, hf["sliding_window"])
    theta, scaling = _rope(hf)
    return dict(n_layer=hf["num_hidden_layers"], d_model=d, n_head=h, n_kv_head=None if kv == h else kv,
                head_dim=None if head_dim * h == d else head_dim, d_ff=hf["intermediate_size"], max_seq_len=context,
                pos_emb="rope", rope_base=theta, rope_scaling=scaling, norm="rmsnorm",
                norm_eps=float(hf.get("rms_norm_eps", 1e-6)), mlp="swiglu", bias=attn_bias,
                tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


GPT2_ACTS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def _gpt2_config(hf: dict) -> dict:
    act = hf.get("activation_function", "gelu_new")
    if act not in GPT2_ACTS:
        raise ValueError(f"GPT-2 activation_function={act!r} is not supported; supported: {sorted(GPT2_ACTS)}")
    if hf.get("scale_attn_by_inverse_layer_idx") or not hf.get("scale_attn_weights", True):
        raise ValueError("GPT-2 attention scaling other than 1/sqrt(head_dim) is not supported "
                         "(scale_attn_by_inverse_layer_idx / scale_attn_weights)")
    if hf.get("tie_word_embeddings", True) is False:
        raise ValueError("untied GPT-2 heads are not supported (tie_word_embeddings=false)")
    d = hf["n_embd"]
    return dict(n_layer=hf["n_layer"], d_model=d, n_head=hf["n_head"], d_ff=hf.get("n_inner") or 4 * d,
                max_seq_len=hf.get("n_positions", 1024), pos_emb="learned", norm="layernorm",
                norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), mlp=GPT2_ACTS[act], bias=True, tie_embeddings=True)


def model_config_from_hf(hf: dict) -> ModelConfig:
    """Our ModelConfig for a Hugging Face config dict; ValueError for anything we cannot express exactly."""
    arch = architecture(hf)
    try:
        fields = _llama_config(hf) if arch == "llama" else _gpt2_config(hf)
        return ModelConfig(family="decoder", vocab_size=hf["vocab_size"], dropout=0.0, **fields)
    except KeyError as e:
        raise ValueError(f"config.json of this {arch} model lacks the key {e}") from e


def export_architecture(cfg: ModelConfig) -> str:
    """Which Hugging Face architecture expresses `cfg` exactly ('llama' or 'gpt2'), or a ValueError."""
    if cfg.family != "decoder":
        raise ValueError(f"only decoder models can be exported to Hugging Face so far, not family={cfg.family!r}")
    if (cfg.pos_emb, cfg.norm, cfg.mlp) == ("rope", "rmsnorm", "swiglu"):
        return "llama"
    gpt2_like = cfg.pos_emb == "learned" and cfg.norm == "layernorm" and cfg.mlp in ("gelu", "gelu_tanh")
    if gpt2_like and cfg.bias and cfg.tie_embeddings and cfg.kv_heads == cfg.n_head and cfg.hd * cfg.n_head == cfg.d_model:
        return "gpt2"
    raise ValueError(f"no Hugging Face architecture matches pos_emb={cfg.pos_emb}, norm={cfg.norm}, mlp={cfg.mlp}, "
                     f"bias={cfg.bias}, tie_embeddings={cfg.tie_embeddings}: export supports Llama "
                     "(rope+rmsnorm+swiglu) and GPT-2 (learned+layernorm+gelu, bias, tied, multi-head)")


def hf_config_from_model(cfg: ModelConfig, special_ids: dict) -> dict:
    """A Hugging Face config.json dict for `cfg`; special_ids: bos/eos/pad token ids (or None)."""
    ids = {f"{k}_token_id": v for k, v in special_ids.items()}
    if export_architecture(cfg) == "gpt2":
        act = "gelu_new" if cfg.mlp == "gelu_tanh" else "gelu"
        return dict(architectures=["GPT2LMHeadModel"], model_type="gpt2", vocab_size=cfg.vocab_size, n_embd=cfg.d_model,
                    n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=cfg.ffn, n_positions=cfg.max_seq_len,
                    activation_function=act, layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=True,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, torch_dtype="float32", **ids)
    rope = {"rope_type": "default", "rope_theta": cfg.rope_base, **(cfg.rope_scaling or {})}
    return dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=cfg.vocab_size,
                hidden_size=cfg.d_model, intermediate_size=cfg.ffn, num_hidden_layers=cfg.n_layer,
                num_attention_heads=cfg.n_head, num_key_value_heads=cfg.kv_heads, head_dim=cfg.hd,
                max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps, hidden_act="silu",
                attention_bias=cfg.bias, mlp_bias=cfg.bias, tie_word_embeddings=cfg.tie_embeddings,
                rope_theta=cfg.rope_base, rope_scaling=cfg.rope_scaling, rope_parameters=rope,
                torch_dtype="float32", **ids)


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
    from llmcycle.models import build_model

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
                             f"of the model that config.json describes")
        out[r.ours] = tensor.contiguous()
    if cfg.tie_embeddings:
        out["head.weight"] = out["embed.tok.weight"]
        used.update(n for n in names if n.endswith("lm_head.weight"))
    extra = sorted(n for n in present - used if not n.endswith(IGNORED_SUFFIXES))
    if extra:
        raise ValueError(f"{where} has {len(extra)} tensor(s) a {arch} model with {cfg.n_layer} layers does not use: "
                         f"{extra[:6]}; is config.json the right one for these weights?")
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
