"""A Hugging Face `config.json` in llmcycle's terms: the one reader of its key spellings.

Two readings of the same dict:

- `model_config_from_hf(hf)`: the exact `ModelConfig` of a model llmcycle can run (Llama-style
  decoders and GPT-2), or a ValueError for anything it cannot express exactly (`llmcycle import`);
  `hf_config_from_model(cfg)` is its inverse (`llmcycle export`).
- `shape_fields(hf)`: the `plan.ModelShape` fields of any family people plan with (Llama/Mistral/
  Qwen2 and other Llama-like decoders, GPT-2, GPT-NeoX/Pythia, BLOOM, BERT/RoBERTa, T5), for
  parameter, memory and compute estimates; unknown `model_type`s fall back to the common keys.

Torch-free, so `llmcycle plan --hf-config` stays fast.
"""

from __future__ import annotations

from pathlib import Path

from llmcycle.config import ModelConfig, read_json_object
from llmcycle.hub.folder import HF_CONFIG

LLAMA_TYPES = ("llama", "mistral")  # imported exactly
SUPPORTED = ", ".join(LLAMA_TYPES + ("gpt2",))
LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "olmo", "granite", "phi3", "mixtral_dense")  # planned
PLANNED = LLAMA_LIKE + ("gpt2", "gpt_neox", "bloom", "bert", "roberta", "t5", "mt5")


def read_hf_config(path: str | Path) -> dict:
    """The dict of a Hugging Face config.json (a file, or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / HF_CONFIG
    if not path.is_file():
        raise ValueError(f"{path} not found: give a Hugging Face {HF_CONFIG} or the folder holding it")
    return read_json_object(path)


def architecture(hf: dict) -> str:
    """'llama' or 'gpt2' for a Hugging Face config dict, or a ValueError naming what it is."""
    mt = hf.get("model_type")
    if mt in LLAMA_TYPES:
        return "llama"
    if mt == "gpt2":
        return "gpt2"
    raise ValueError(f"unsupported architecture: model_type={mt!r} (architectures={hf.get('architectures')}); "
                     f"llmcycle imports these model types: {SUPPORTED}")


# ------------------------------------------------------------------ exact: ModelConfig (import, export)


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
    max_seq_len = hf.get("max_position_embeddings", 2048)
    if hf.get("sliding_window"):  # full attention equals sliding-window attention inside the window
        max_seq_len = min(max_seq_len, hf["sliding_window"])
    theta, scaling = _rope(hf)
    return dict(n_layer=hf["num_hidden_layers"], d_model=d, n_head=h, n_kv_head=None if kv == h else kv,
                head_dim=None if head_dim * h == d else head_dim, d_ff=hf["intermediate_size"], max_seq_len=max_seq_len,
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
        raise ValueError(f"{HF_CONFIG} of this {arch} model lacks the key {e}") from e


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


# ------------------------------------------------------------------ estimate: ModelShape fields (plan)


def _get(d: dict, *keys, default=None):
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return default


def _llama_shape(d: dict) -> dict:
    bias = bool(d.get("attention_bias", d.get("model_type") == "qwen2"))
    return dict(mlp="swiglu", norm="rmsnorm", pos_emb="rope", tied=bool(d.get("tie_word_embeddings", False)),
                attn_bias=bias, mlp_bias=bool(d.get("mlp_bias", False)), norm_bias=False,
                d_ff=d["intermediate_size"], head_dim=d.get("head_dim"))


def _gpt2_shape(d: dict) -> dict:
    act = d.get("activation_function", "gelu_new")
    return dict(mlp="gelu_tanh" if act in ("gelu_new", "gelu_pytorch_tanh") else "gelu", d_ff=d.get("n_inner"),
                tied=bool(d.get("tie_word_embeddings", True)))


def _neox_shape(d: dict) -> dict:
    return dict(pos_emb="rope", d_ff=d["intermediate_size"], tied=bool(d.get("tie_word_embeddings", False)),
                attn_bias=bool(d.get("attention_bias", True)))


def _bloom_shape(d: dict) -> dict:
    return dict(pos_emb="alibi", embed_norm=True, tied=True)


def _bert_shape(d: dict) -> dict:
    return dict(family="encoder", d_ff=d["intermediate_size"], embed_norm=True, final_norm=False,
                type_vocab=d.get("type_vocab_size", 2), pooler=True, tied=True)


def _t5_shape(d: dict) -> dict:
    proj = d.get("feed_forward_proj", "relu")
    return dict(family="seq2seq", n_decoder_layer=d.get("num_decoder_layers"), head_dim=d["d_kv"], d_ff=d["d_ff"],
                mlp="geglu" if proj.startswith("gated") else "relu", norm="rmsnorm", pos_emb="relative",
                attn_bias=False, mlp_bias=False, norm_bias=False, tied=bool(d.get("tie_word_embeddings", True)),
                rel_buckets=d.get("relative_attention_num_buckets", 32))


SHAPE_READERS = {"gpt2": _gpt2_shape, "gpt_neox": _neox_shape, "bloom": _bloom_shape, "bert": _bert_shape,
                 "roberta": _bert_shape, "t5": _t5_shape, "mt5": _t5_shape, **dict.fromkeys(LLAMA_LIKE, _llama_shape)}


def shape_fields(d: dict, name: str = "") -> dict:
    """`plan.ModelShape(**shape_fields(d))` for a config dict of any planned family."""
    mt = d.get("model_type", "")
    base = dict(
        n_layer=_get(d, "num_hidden_layers", "n_layer", "num_layers"),
        d_model=_get(d, "hidden_size", "n_embd", "d_model", "n_embed"),
        n_head=_get(d, "num_attention_heads", "n_head", "num_heads"),
        n_kv_head=_get(d, "num_key_value_heads"),
        vocab_size=d.get("vocab_size"),
        max_seq_len=_get(d, "max_position_embeddings", "n_positions", "n_ctx", "seq_length", default=2048),
        name=name or mt,
    )
    extra = SHAPE_READERS.get(mt, lambda d: {})(d)
    missing = [k for k in ("n_layer", "d_model", "n_head", "vocab_size") if base[k] is None]
    if missing:
        raise ValueError(f"{HF_CONFIG} model_type={mt!r} lacks {missing}; supported model types: {', '.join(PLANNED)}")
    if base["n_kv_head"] == base["n_head"]:
        base["n_kv_head"] = None
    return {**base, **{k: v for k, v in extra.items() if v is not None or k == "head_dim"}}
