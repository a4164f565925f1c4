"""`llmcycle export --run DIR --to gguf OUT.gguf`: a Llama-style decoder as a llama.cpp GGUF file.

    metadata    general.architecture = llama; llama.* shape keys (context, width, layers, FFN, heads,
                KV heads, head size, rope base, RMSNorm epsilon); llama3 rope scaling as `rope_freqs`
    tokenizer   tokenizer.ggml.model = gpt2 (byte-level BPE): tokens, merges, token types (control for
                the special tokens), the pre-tokenizer's name (`tokenizer.ggml.pre`), bos/eos/pad ids,
                add_bos_token, the chat template and the extra end-of-turn id when the run has them
    tensors     Hugging Face Llama tensors (`hub/tensors.py`) under llama.cpp's names, Q and K rows in
                llama.cpp's interleaved rotary order (the inverse of `hub/gguf.py`'s `unpermute`);
                --gguf-type f32 | f16 | q8_0 for the matrices (Q8_0: blocks of 32 with one f16 scale;
                a matrix whose rows are not a multiple of 32 stays f16); norms always f32

Reading the file back with `llmcycle import OUT.gguf` gives the same logits (f32) or close ones (f16,
Q8_0); tests/test_gguf_export.py checks both, and llama.cpp itself when llama-cpp-python is installed.
Only the Llama architecture (rope + rmsnorm + swiglu) is written; GPT-2-style runs are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from llmcycle.hub.gguf import CONTROL, LAYER_NAMES, PRE_SPLITS, TENSOR_NAMES
from llmcycle.hub.hf_config import export_architecture
from llmcycle.hub.tensors import to_hf
from llmcycle.inference.chat import prompt_style
from llmcycle.models.layers import _llama3_scaled
from llmcycle.rundir import load_model, load_tokenizer

GGUF_TYPES = ("f32", "f16", "q8_0")
NORMAL, UNUSED = 1, 5  # llama.cpp token types (CONTROL = 3 comes from gguf.py)
HF_TO_GGUF = {v: k for k, v in TENSOR_NAMES.items()}
HF_LAYER_TO_GGUF = {v: k for k, v in LAYER_NAMES.items()}


def permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Q/K rows from the half-split rotary layout (ours, Hugging Face's) to llama.cpp's interleaved pairs."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _gguf_name(hf: str) -> str:
    if hf in HF_TO_GGUF:
        return HF_TO_GGUF[hf]
    parts = hf.split(".")  # model.layers.<i>.<self_attn|mlp|...>.<proj>.<weight|bias>
    kind = ".".join(parts[3:-1])
    if parts[:2] != ["model", "layers"] or kind not in HF_LAYER_TO_GGUF:
        raise ValueError(f"no GGUF name for the tensor {hf}")
    return f"blk.{parts[2]}.{HF_LAYER_TO_GGUF[kind]}.{parts[-1]}"


def _pre_name(tok_json: dict) -> str:
    """The `tokenizer.ggml.pre` whose splits equal this tokenizer's pre-tokenizer."""
    pre = tok_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    regexes = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    for name, splits in PRE_SPLITS.items():
        if regexes == splits:
            return name
    raise ValueError("the run's tokenizer has a pre-tokenizer llama.cpp has no name for; GGUF export supports "
                     "byte-level BPE tokenizers with GPT-2, Llama 3 or SmolLM splits")


def _vocab(tok, vocab_size: int) -> tuple[list[str], list[int], list[str], str]:
    """tokens (by id, padded to the embedding's rows), token types, merges, pre-tokenizer name."""
    d = json.loads(tok._hf.to_str())
    if d.get("model", {}).get("type") != "BPE":
        raise ValueError("GGUF export writes byte-level BPE tokenizers (tokenizer.ggml.model gpt2); this run's is "
                         f"{d.get('model', {}).get('type')}")
    by_id = {i: t for t, i in d["model"]["vocab"].items()}
    special = set()
    for a in d.get("added_tokens", []):
        by_id[a["id"]] = a["content"]
        if a.get("special"):
            special.add(a["id"])
    if max(by_id) >= vocab_size:
        raise ValueError(f"the tokenizer has ids up to {max(by_id)} but the model only {vocab_size} embeddings")
    tokens = [by_id.get(i, f"<|unused_{i}|>") for i in range(vocab_size)]
    types = [CONTROL if i in special else NORMAL if i in by_id else UNUSED for i in range(vocab_size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in d["model"].get("merges", [])]
    return tokens, types, merges, _pre_name(d)


def _matrix(writer, name: str, w: torch.Tensor, kind: str) -> None:
    import gguf

    a = w.detach().float().contiguous().numpy()
    if a.ndim == 1 or kind == "f32":
        writer.add_tensor(name, a.astype(np.float32))
    elif kind == "q8_0" and a.shape[-1] % 32 == 0:
        q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, a.astype(np.float16))


def export_gguf(run: Path, out: Path, kind: str = "f32", overwrite: bool = False) -> dict:
    """Write the run's newest decoder weights and tokenizer as one GGUF file."""
    import gguf


    if kind not in GGUF_TYPES:
        raise ValueError(f"--gguf-type {kind!r} is not supported; choose one of {', '.join(GGUF_TYPES)}")
    run, out = Path(run), Path(out)
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists; choose another file or pass --overwrite")
    model, cfg = load_model(run)
    m = cfg.model
    if export_architecture(m) != "llama" or m.bias:
        raise ValueError("GGUF export writes the llama architecture (rope + rmsnorm + swiglu, no bias); "
                         "export this run with --to hf instead")
    tok = load_tokenizer(run)
    style = prompt_style(run, tok)
    tokens, types, merges, pre = _vocab(tok, m.vocab_size)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(run.resolve().name)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[kind])
    w.add_context_length(m.max_seq_len)
    w.add_embedding_length(m.d_model)
    w.add_block_count(m.n_layer)
    w.add_feed_forward_length(m.ffn)
    w.add_head_count(m.n_head)
    w.add_head_count_kv(m.kv_heads)
    w.add_key_length(m.hd)
    w.add_value_length(m.hd)
    w.add_rope_dimension_count(m.hd)
    w.add_rope_freq_base(m.rope_base)
    w.add_layer_norm_rms_eps(m.norm_eps)
    w.add_vocab_size(m.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for role, i in (("bos", tok.bos_id), ("eos", tok.eos_id), ("pad", tok.pad_id)):
        if i is not None:
            getattr(w, f"add_{role}_token_id")(i)
    w.add_add_bos_token(bool(style.add_bos and tok.bos_id is not None))
    if style.template:
        w.add_chat_template(style.template)
    eot = [tok.token_to_id(s) for s in style.stop_tokens if tok.token_to_id(s) is not None]
    if eot:
        w.add_eot_token_id(eot[0])

    if m.rope_scaling:
        if m.rope_scaling.get("rope_type") != "llama3":
            raise ValueError(f"rope scaling {m.rope_scaling.get('rope_type')!r} has no GGUF form llmcycle writes")
        inv = 1.0 / (m.rope_base ** (torch.arange(0, m.hd, 2, dtype=torch.float32) / m.hd))
        _matrix(w, "rope_freqs.weight", inv / _llama3_scaled(inv, m.rope_scaling), "f32")
    tensors = to_hf(model.state_dict(), m, "llama")
    for hf_name, t in tensors.items():
        if ".q_proj." in hf_name:
            t = permute(t, m.n_head)
        elif ".k_proj." in hf_name:
            t = permute(t, m.kv_heads)
        _matrix(w, _gguf_name(hf_name), t, kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(out)
    return {"out": str(out), "architecture": "llama", "tensors": len(tensors), "type": kind,
            "bytes": out.stat().st_size}
