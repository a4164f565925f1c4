"""`llmcycle export --run DIR --to hf OUT`: an llmcycle decoder as a Hugging Face model folder.

    OUT/config.json               LlamaForCausalLM (rope + rmsnorm + swiglu) or GPT2LMHeadModel (learned + layernorm + gelu)
    OUT/model.safetensors         the newest checkpoint's weights, Hugging Face names, fp32
    OUT/tokenizer.json            the run's tokenizer (a bos template added when its prompts start with bos)
    OUT/tokenizer_config.json     role tokens for PreTrainedTokenizerFast
    OUT/generation_config.json    bos/eos/pad ids
    OUT/chat_template.jinja       when the run has one

`AutoModelForCausalLM.from_pretrained(OUT)` then gives the same logits as llmcycle. Encoder and
encoder-decoder families are not exported yet.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from llmcycle.hub.hf import export_architecture, hf_config_from_model, to_hf
from llmcycle import rundir
from llmcycle.atomic import atomic_write_text

FORMATS = ("hf",)


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
    from llmcycle.inference.chat import prompt_style

    style = prompt_style(run, tok)
    path = tok.save(out)
    (out / "tokenizer_meta.json").unlink(missing_ok=True)  # llmcycle's sidecar; HF reads tokenizer_config.json
    if style.add_bos and tok.bos_id is not None:
        atomic_write_text(path, _with_bos_template(path.read_text(encoding="utf-8"), style.bos_token, tok.bos_id))
    name = lambda i: tok.id_to_token(i) if i is not None else None  # noqa: E731
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": name(tok.bos_id), "eos_token": name(tok.eos_id),
            "pad_token": name(tok.pad_id), "add_bos_token": style.add_bos}
    atomic_write_text(out / "tokenizer_config.json", json.dumps(tcfg, indent=2) + "\n")
    if style.template:
        atomic_write_text(out / "chat_template.jinja", style.template)
    gen = run / rundir.GENERATION_CONFIG
    if gen.is_file():
        shutil.copyfile(gen, out / rundir.GENERATION_CONFIG)
    else:
        ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
        atomic_write_text(out / "generation_config.json", json.dumps(ids, indent=2) + "\n")


def export_hf(run: Path, out: Path, overwrite: bool = False) -> dict:
    """Write the run's newest decoder weights, config and tokenizer as a Hugging Face folder."""
    from safetensors.torch import save_file

    from llmcycle.rundir import load_model, load_tokenizer

    run, out = Path(run), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
    model, cfg = load_model(run)
    arch = export_architecture(cfg.model)
    tok = load_tokenizer(run)
    tensors = to_hf(model.state_dict(), cfg.model, arch)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    ids = {"bos": tok.bos_id, "eos": tok.eos_id, "pad": tok.pad_id}
    atomic_write_text(out / "config.json", json.dumps(hf_config_from_model(cfg.model, ids), indent=2) + "\n")
    _tokenizer_files(run, out, tok)
    return {"out": str(out), "architecture": arch, "tensors": len(tensors)}


def export_model(run: Path, fmt: str, out: Path, overwrite: bool = False) -> dict:
    if fmt not in FORMATS:
        raise ValueError(f"--to {fmt!r} is not supported; choose one of {', '.join(FORMATS)}")
    return export_hf(run, out, overwrite)
