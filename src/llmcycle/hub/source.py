"""What every import source (a Hugging Face folder, the hub, a GGUF file) is read into.

A `Checkpoint` holds a Hugging Face style `config.json` dict, the tensor names with a loader for
each (Hugging Face names, so one mapping in `hf.py` serves every source), and the tokenizer
material: `tokenizer.json` text, the token strings that play bos/eos/pad, whether prompts start
with bos, the chat template and extra stop ids. `tokenizer_from_folder` reads the latter from the
files a Hugging Face model folder carries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch


@dataclass
class TokenizerFiles:
    tokenizer_json: str  # the text of a Hugging Face tokenizer.json
    bos: str | int | None = None  # role tokens, as strings or ids
    eos: str | int | None = None
    pad: str | int | None = None
    add_bos: bool = False  # whether a prompt starts with bos (Llama 2/3: yes; GPT-2, SmolLM2: no)
    chat_template: str | None = None  # jinja source
    stop_ids: list[int] = field(default_factory=list)  # ids that also end a reply (generation_config eos list)


@dataclass
class Checkpoint:
    hf_config: dict
    names: list[str]
    get: Callable[[str], torch.Tensor]
    tokenizer: TokenizerFiles
    origin: str  # what was imported, for the record


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _token(value) -> str | None:
    """tokenizer_config.json spells a token as a string or as {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _template(folder: Path, cfg: dict) -> str | None:
    """The chat template: chat_template.jinja, chat_template.json, or tokenizer_config.json's entry."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    tpl = read_json(folder / "chat_template.json").get("chat_template", cfg.get("chat_template"))
    if isinstance(tpl, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in tpl}
        tpl = named.get("default", next(iter(named.values()), None))
    return tpl


def _adds_bos(tokenizer_json: str) -> bool:
    """Whether tokenizer.json's post-processor puts a special token before a single text (Llama 3 style)."""
    post = json.loads(tokenizer_json).get("post_processor") or {}
    procs = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    for p in procs:
        single = p.get("single") if p.get("type") == "TemplateProcessing" else None
        if single:
            return "SpecialToken" in single[0]
    return False


def _tokenizer_json(folder: Path) -> str:
    if (folder / "tokenizer.json").is_file():
        return (folder / "tokenizer.json").read_text(encoding="utf-8")
    try:  # a slow tokenizer only (sentencepiece tokenizer.model): let transformers convert it
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
        return tok.backend_tokenizer.to_str()
    except Exception as e:  # noqa: BLE001 - any failure means: no usable tokenizer
        raise ValueError(f"{folder} has no tokenizer.json and transformers could not build one ({e}); "
                         "add the model's tokenizer.json to the folder") from e


def tokenizer_from_folder(folder: Path, hf_config: dict) -> TokenizerFiles:
    """The tokenizer material of a Hugging Face model folder."""
    text = _tokenizer_json(folder)
    cfg = read_json(folder / "tokenizer_config.json")
    cfg = {**read_json(folder / "special_tokens_map.json"), **cfg}
    gen = read_json(folder / "generation_config.json")

    def role(name: str):
        tok = _token(cfg.get(f"{name}_token"))
        return tok if tok is not None else gen.get(f"{name}_token_id", hf_config.get(f"{name}_token_id"))

    eos = role("eos")
    eos_ids = gen.get("eos_token_id", hf_config.get("eos_token_id"))
    stop_ids = eos_ids if isinstance(eos_ids, list) else []
    if isinstance(eos, list):
        eos = eos[0]
    add_bos = cfg["add_bos_token"] if "add_bos_token" in cfg else _adds_bos(text)
    return TokenizerFiles(text, role("bos"), eos, role("pad"), bool(add_bos), _template(folder, cfg), stop_ids)
