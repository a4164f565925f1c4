"""Read a Hugging Face `config.json` dict into a `ModelShape`.

Covers the key spellings of the families people plan with: Llama/Mistral/Qwen2 (and other
Llama-like decoders), GPT-2, GPT-NeoX/Pythia, BLOOM, BERT/RoBERTa (encoders) and T5
(encoder-decoder). Unknown `model_type`s fall back to the common keys when present.
"""

from __future__ import annotations

from llmcycle.plan.shape import ModelShape

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "olmo", "granite", "phi3", "mixtral_dense")
SUPPORTED = LLAMA_LIKE + ("gpt2", "gpt_neox", "bloom", "bert", "roberta", "t5", "mt5")


def _get(d: dict, *keys, default=None):
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return default


def _llama(d: dict) -> dict:
    bias = bool(d.get("attention_bias", d.get("model_type") == "qwen2"))
    return dict(mlp="swiglu", norm="rmsnorm", pos_emb="rope", tied=bool(d.get("tie_word_embeddings", False)),
                attn_bias=bias, mlp_bias=bool(d.get("mlp_bias", False)), norm_bias=False,
                ffn=d["intermediate_size"], head_dim=d.get("head_dim"))


def _gpt2(d: dict) -> dict:
    act = d.get("activation_function", "gelu_new")
    return dict(mlp="gelu_tanh" if act in ("gelu_new", "gelu_pytorch_tanh") else "gelu", ffn=d.get("n_inner"),
                tied=bool(d.get("tie_word_embeddings", True)))


def _neox(d: dict) -> dict:
    return dict(pos_emb="rope", ffn=d["intermediate_size"], tied=bool(d.get("tie_word_embeddings", False)),
                attn_bias=bool(d.get("attention_bias", True)))


def _bloom(d: dict) -> dict:
    return dict(pos_emb="alibi", embed_norm=True, tied=True)


def _bert(d: dict) -> dict:
    return dict(family="encoder", ffn=d["intermediate_size"], embed_norm=True, final_norm=False,
                type_vocab=d.get("type_vocab_size", 2), pooler=True, tied=True)


def _t5(d: dict) -> dict:
    proj = d.get("feed_forward_proj", "relu")
    return dict(family="seq2seq", n_decoder_layer=d.get("num_decoder_layers"), head_dim=d["d_kv"], ffn=d["d_ff"],
                mlp="geglu" if proj.startswith("gated") else "relu", norm="rmsnorm", pos_emb="relative",
                attn_bias=False, mlp_bias=False, norm_bias=False, tied=bool(d.get("tie_word_embeddings", True)),
                rel_buckets=d.get("relative_attention_num_buckets", 32))


def shape_from_hf_dict(d: dict, name: str = "") -> ModelShape:
    mt = d.get("model_type", "")
    base = dict(
        n_layer=_get(d, "num_hidden_layers", "n_layer", "num_layers"),
        d_model=_get(d, "hidden_size", "n_embd", "d_model", "n_embed"),
        n_head=_get(d, "num_attention_heads", "n_head", "num_heads"),
        n_kv_head=_get(d, "num_key_value_heads"),
        vocab_size=d.get("vocab_size"),
        context=_get(d, "max_position_embeddings", "n_positions", "n_ctx", "seq_length", default=2048),
        name=name or mt,
    )
    if mt in LLAMA_LIKE:
        extra = _llama(d)
    elif mt in ("t5", "mt5"):
        extra = _t5(d)
    else:
        extra = {"gpt2": _gpt2, "gpt_neox": _neox, "bloom": _bloom, "bert": _bert, "roberta": _bert}.get(mt, lambda d: {})(d)
    missing = [k for k in ("n_layer", "d_model", "n_head", "vocab_size") if base[k] is None]
    if missing:
        raise ValueError(f"config.json model_type={mt!r} lacks {missing}; supported model types: {', '.join(SUPPORTED)}")
    if base["n_kv_head"] == base["n_head"]:
        base["n_kv_head"] = None
    return ModelShape(**base, **{k: v for k, v in extra.items() if v is not None or k == "head_dim"})
