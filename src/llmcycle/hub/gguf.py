"""Read a llama.cpp GGUF file (architecture `llama`) into a `Checkpoint` with Hugging Face names.

- Config: the `llama.*` metadata becomes a Hugging Face Llama config dict.
- Weights: every tensor is dequantized to fp32 with `gguf.quants.dequantize` (Q4_0/1, Q5_0/1, Q8_0,
  the K-quants, ...); a type it cannot dequantize is a ValueError naming tensor and type.
- Q and K rows: llama.cpp's converter reorders the rows of `attn_q`/`attn_k` within each head from
  the half-split rotary layout (Hugging Face, ours) to interleaved pairs; `unpermute` undoes it.
- Llama 3.1+ rope scaling is stored only as the `rope_freqs` factors; we recover the llama3
  parameters from them (and refuse factors that fit no known setting).
- Tokenizer: a byte-level BPE vocabulary (`tokenizer.ggml.model == "gpt2"`) is rebuilt with the
  `tokenizers` library: vocab and merges from the metadata, the pre-tokenizer llama.cpp uses for
  `tokenizer.ggml.pre`, control tokens as special added tokens. Other vocabularies (sentencepiece
  `llama`) go through transformers' GGUF tokenizer converter when it is installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from llmcycle.hub.source import Checkpoint, TokenizerFiles
from llmcycle.models.layers import _llama3_scaled  # private: models/layers.py has no public name for it yet

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> the regex splits llama.cpp applies before byte-level BPE (llama-vocab.cpp)
PRE_SPLITS = {
    "default": [GPT2_SPLIT], "gpt-2": [GPT2_SPLIT],
    "smollm": [r"\p{N}", GPT2_SPLIT], "starcoder": [r"\p{N}", GPT2_SPLIT], "refact": [r"\p{N}", GPT2_SPLIT],
    "llama-bpe": [LLAMA3_SPLIT], "llama3": [LLAMA3_SPLIT], "llama-v3": [LLAMA3_SPLIT], "smaug-bpe": [LLAMA3_SPLIT],
}
TENSOR_NAMES = {  # GGUF -> Hugging Face Llama
    "token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
CONTROL, USER_DEFINED = 3, 4


def _reader(path: Path):
    try:
        from gguf import GGUFReader  # optional dependency (llmcycle[hf]), only for .gguf files
    except ImportError as e:
        raise ValueError("reading GGUF files needs the gguf package: pip install 'llmcycle[hf]'") from e

    class PlainReader(GGUFReader):
        """GGUFReader over a plain ndarray view of its memory map: slicing an `np.memmap` is slow, and
        parsing ~100k vocabulary strings slices it ~1M times (8 s -> 1.4 s for SmolLM2)."""

        @property
        def data(self):
            return self._plain

        @data.setter
        def data(self, value):
            self._plain = value.view(np.ndarray)

    try:
        return PlainReader(str(path))
    except Exception as e:  # noqa: BLE001 - truncated or not a GGUF file
        raise ValueError(f"{path} is not a readable GGUF file: {e}") from e


def _metadata(reader) -> dict:
    """Scalar and string metadata (large arrays are read on demand with `_array`)."""
    out = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                                               "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            continue
        out[key] = f.contents()
    return out


def _array(reader, key: str) -> list | None:
    f = reader.fields.get(key)
    return f.contents() if f is not None else None


def unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's row order for Q/K: (n_head, 2, D/2) halves were stored as (n_head, D/2, 2) pairs."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def dequantize(tensor) -> torch.Tensor:
    """One GGUF tensor as an fp32 torch tensor of its logical shape (rows = outputs)."""
    from gguf.quants import dequantize as gguf_dequantize  # optional dependency (llmcycle[hf])

    shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
    try:
        data = gguf_dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as e:
        raise ValueError(f"tensor {tensor.name} uses the GGUF type {tensor.tensor_type.name}, which gguf cannot "
                         "dequantize; convert the model with another quantization (e.g. Q8_0, Q4_K_M)") from e
    if data.dtype not in (np.float32, np.float16):
        raise ValueError(f"tensor {tensor.name} has the GGUF type {tensor.tensor_type.name} (integers), not weights")
    data = np.ascontiguousarray(data, dtype=np.float32).reshape(shape)
    return torch.from_numpy(data if data.flags.writeable else data.copy())


def _hf_name(name: str) -> str | None:
    if name in TENSOR_NAMES:
        return TENSOR_NAMES[name]
    parts = name.split(".")  # blk.<i>.<kind>.<weight|bias>
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in LAYER_NAMES:
        return f"model.layers.{parts[1]}.{LAYER_NAMES[parts[2]]}.{parts[3]}"
    return None


def _llama3_from_factors(factors: torch.Tensor, theta: float, head_dim: int) -> dict:
    """The llama3 rope_scaling whose frequency factors equal the GGUF's `rope_freqs` tensor."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    factor = float(factors.max())
    for low, high, ctx in ((1.0, 4.0, 8192), (1.0, 4.0, 4096), (1.0, 2.0, 8192)):
        scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                   "original_max_position_embeddings": ctx}
        if torch.allclose(inv_freq / _llama3_scaled(inv_freq, scaling), factors, rtol=1e-3):
            return scaling
    raise ValueError("the GGUF's rope_freqs factors match no llama3 rope scaling llmcycle knows; not imported")


def _hf_config(meta: dict, vocab: int, tied: bool) -> dict:
    a = "llama."
    heads = meta[a + "attention.head_count"]
    d = meta[a + "embedding_length"]
    cfg = {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab, "hidden_size": d,
        "intermediate_size": meta[a + "feed_forward_length"], "num_hidden_layers": meta[a + "block_count"],
        "num_attention_heads": heads, "num_key_value_heads": meta.get(a + "attention.head_count_kv", heads),
        "head_dim": meta.get(a + "attention.key_length", d // heads),
        "max_position_embeddings": meta.get(a + "context_length", 2048),
        "rms_norm_eps": meta.get(a + "attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": meta.get(a + "rope.freq_base", 10000.0), "tie_word_embeddings": tied,
    }
    kind = meta.get(a + "rope.scaling.type")
    if kind not in (None, "none"):
        cfg["rope_scaling"] = {"rope_type": kind, "factor": meta.get(a + "rope.scaling.factor")}
    return cfg


def read_gguf(path: Path) -> Checkpoint:
    path = Path(path)
    reader = _reader(path)
    meta = _metadata(reader)
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"unsupported GGUF architecture {arch!r} in {path.name}; llmcycle imports 'llama' GGUF files "
                         "(Llama 2/3, SmolLM2, Mistral); import other models from their Hugging Face folder")
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ValueError(f"{path.name} has no token_embd.weight tensor: not a complete llama model")
    vocab = int(tensors["token_embd.weight"].shape[1])
    hf = _hf_config(meta, vocab, tied="output.weight" not in tensors)
    if "rope_freqs.weight" in tensors:
        hf["rope_scaling"] = _llama3_from_factors(dequantize(tensors["rope_freqs.weight"]), hf["rope_theta"], hf["head_dim"])
    names = {_hf_name(n) or n: n for n in tensors if n != "rope_freqs.weight"}

    def get(hf_name: str) -> torch.Tensor:
        w = dequantize(tensors[names[hf_name]])
        if ".q_proj." in hf_name:
            return unpermute(w, hf["num_attention_heads"])
        if ".k_proj." in hf_name:
            return unpermute(w, hf["num_key_value_heads"])
        return w

    return Checkpoint(hf, list(names), get, gguf_tokenizer(reader, meta, path), str(path))


# ------------------------------------------------------------------ tokenizer


def _byte_level_bpe(tokens: list[str], merges: list[str], types: list[int], pre: str) -> str:
    if pre not in PRE_SPLITS:
        raise ValueError(f"GGUF pre-tokenizer {pre!r} is not known to llmcycle; known: {sorted(PRE_SPLITS)}")
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False)
    tok = Tokenizer(bpe)
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in PRE_SPLITS[pre]]
    tok.pre_tokenizer = pre_tokenizers.Sequence([*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == USER_DEFINED])
    return tok.to_str()


def _via_transformers(path: Path) -> str:
    try:
        # optional heavy dependency, only for sentencepiece vocabularies
        from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer, get_gguf_tokenizer
    except ImportError as e:
        raise ValueError(f"{path.name} has a sentencepiece tokenizer; rebuilding it needs transformers' GGUF "
                         "converter (pip install 'llmcycle[hf]')") from e
    arch, tok_dict, _ = get_gguf_tokenizer(str(path))
    backend, _ = convert_gguf_tokenizer(arch, tok_dict)
    return backend.to_str()


def gguf_tokenizer(reader, meta: dict, path: Path) -> TokenizerFiles:
    tokens = _array(reader, "tokenizer.ggml.tokens")
    if not tokens:
        raise ValueError(f"{path.name} carries no tokenizer (tokenizer.ggml.tokens); llmcycle needs one to import")
    kind = meta.get("tokenizer.ggml.model")
    if kind == "gpt2":
        types = _array(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
        text = _byte_level_bpe(tokens, _array(reader, "tokenizer.ggml.merges") or [], types,
                               meta.get("tokenizer.ggml.pre", "default"))
    else:
        text = _via_transformers(path)
    ids = {r: meta.get(f"tokenizer.ggml.{r}_token_id") for r in ("bos", "eos", "padding")}
    add_bos = meta.get("tokenizer.ggml.add_bos_token", kind == "llama")
    eot = meta.get("tokenizer.ggml.eot_token_id")
    return TokenizerFiles(text, ids["bos"], ids["eos"], ids["padding"], bool(add_bos),
                          meta.get("tokenizer.chat_template"), [eot] if eot is not None else [])


def is_gguf(path: Path) -> bool:
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"

