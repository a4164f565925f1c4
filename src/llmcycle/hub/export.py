"""`llmcycle export --run DIR --to hf OUT`: an llmcycle decoder as a Hugging Face model folder.

    OUT/config.json               LlamaForCausalLM (rope + rmsnorm + swiglu) or GPT2LMHeadModel (learned + layernorm + gelu)
    OUT/model.safetensors         the newest checkpoint's weights, Hugging Face names, fp32
    OUT/tokenizer.json            the run's tokenizer (a bos template added when its prompts start with bos)
    OUT/tokenizer_config.json     role tokens for PreTrainedTokenizerFast
    OUT/generation_config.json    bos/eos/pad ids
    OUT/chat_template.jinja       when the run has one

(the names are Hugging Face's, `folder.py`'s constants). `AutoModelForCausalLM.from_pretrained(OUT)`
then gives the same logits as llmcycle. Encoder and encoder-decoder families are not exported yet.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from llmcycle import rundir
from llmcycle.atomic import atomic_write_text
from llmcycle.data.tokenizer import META_SUFFIX
from llmcycle.hub.folder import HF_CHAT_TEMPLATE, HF_CONFIG, HF_GENERATION_CONFIG, HF_TOKENIZER_CONFIG, HF_WEIGHTS
from llmcycle.hub.hf_config import export_architecture, hf_config_from_model
from llmcycle.hub.tensors import to_hf
from llmcycle.inference.chat import prompt_style

FORMATS = ("hf", "gguf")  # gguf: hub/gguf_export.py


def _with_bos_template(tokenizer_json: str, bos: str, bos_id: int) -> str:
    """Make a fast tokenizer put bos before each text (what llmcycle does for runs trained here)."""
    d = json.loads(tokenizer_json)
    if d.get("post_processor") is None:
        d["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
        }
    return json.dumps(d, ensure_ascii=False, indent=2)


def _tokenizer_files(run: Path, out: Path, tok) -> None:
    style = prompt_style(run, tok)
    path = tok.save(out)
    path.with_name(path.stem + META_SUFFIX).unlink(missing_ok=True)  # llmcycle's sidecar; HF reads tokenizer_config
    if style.add_bos and tok.bos_id is not None:
        atomic_write_text(path, _with_bos_template(path.read_text(encoding="utf-8"), style.bos_token, tok.bos_id))
    name = lambda i: tok.id_to_token(i) if i is not None else None  # noqa: E731
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": name(tok.bos_id), "eos_token": name(tok.eos_id),
            "pad_token": name(tok.pad_id), "add_bos_token": style.add_bos}
    atomic_write_text(out / HF_TOKENIZER_CONFIG, json.dumps(tcfg, indent=2) + "\n")
    if style.template:
        atomic_write_text(out / HF_CHAT_TEMPLATE, style.template)
    gen = Path(run) / rundir.GENERATION_CONFIG
    if gen.is_file():
        shutil.copyfile(gen, out / HF_GENERATION_CONFIG)
    else:
        ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
        atomic_write_text(out / HF_GENERATION_CONFIG, json.dumps(ids, indent=2) + "\n")


def export_hf(run: Path, out: Path, overwrite: bool = False) -> dict:
    """Write the run's newest decoder weights, config and tokenizer as a Hugging Face folder."""
    run, out = Path(run), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
    model, cfg = rundir.load_model(run)
    arch = export_architecture(cfg.model)
    tok = rundir.load_tokenizer(run)
    tensors = to_hf(model.state_dict(), cfg.model, arch)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / HF_WEIGHTS), metadata={"format": "pt"})
    ids = {"bos": tok.bos_id, "eos": tok.eos_id, "pad": tok.pad_id}
    atomic_write_text(out / HF_CONFIG, json.dumps(hf_config_from_model(cfg.model, ids), indent=2) + "\n")
    _tokenizer_files(run, out, tok)
    return {"out": str(out), "architecture": arch, "tensors": len(tensors)}


def export_model(run: Path, fmt: str, out: Path, overwrite: bool = False, gguf_type: str = "f32") -> dict:
    if fmt not in FORMATS:
        raise ValueError(f"--to {fmt!r} is not supported; choose one of {', '.join(FORMATS)}")
    if fmt == "gguf":
        from llmcycle.hub.gguf_export import export_gguf

        return export_gguf(run, out, gguf_type, overwrite)
    return export_hf(run, out, overwrite)
