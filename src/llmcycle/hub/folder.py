"""A Hugging Face model folder: its file names (named here once), its weights, its tokenizer
material, and fetching one from the hub.

Weights are read lazily, one tensor at a time, from `model.safetensors`, a sharded
`model.safetensors.index.json`, or `pytorch_model.bin` (loaded with `weights_only=True`).
A hub name (`org/name`) is downloaded with `huggingface_hub.snapshot_download` when the machine is
online; offline, the error says so. Importing this module needs no torch (the planner reads
`HF_CONFIG` through `hf_config.py`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from llmcycle.config import read_json_object
from llmcycle.hub.source import Checkpoint, TokenizerFiles

# Hugging Face's folder layout
HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_WEIGHTS_INDEX = "model.safetensors.index.json"
HF_TORCH_WEIGHTS = "pytorch_model.bin"
HF_TORCH_WEIGHTS_INDEX = "pytorch_model.bin.index.json"
HF_TOKENIZER = "tokenizer.json"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
HF_SPECIAL_TOKENS = "special_tokens_map.json"
HF_GENERATION_CONFIG = "generation_config.json"
HF_CHAT_TEMPLATE = "chat_template.jinja"
HF_CHAT_TEMPLATE_JSON = "chat_template.json"

HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")
HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]


def read_json(path: Path) -> dict:
    return read_json_object(path) if path.is_file() else {}


# ------------------------------------------------------------------ weights


def _safetensors(files: list[Path]):
    from safetensors import safe_open  # with torch below: only when weights are read, not for the planner

    handles = {f: safe_open(str(f), framework="pt") for f in files}
    where = {name: f for f, h in handles.items() for name in h.keys()}
    return list(where), lambda name: handles[where[name]].get_tensor(name)


def _torch_bin(files: list[Path]):
    import torch  # only when weights are read: `llmcycle plan --hf-config` stays torch-free

    state = {}
    for f in files:
        state.update(torch.load(f, map_location="cpu", weights_only=True, mmap=True))
    return list(state), state.__getitem__


def weights(folder: Path):
    """(tensor names, loader) for the weights in `folder`."""
    for index, reader in ((HF_WEIGHTS_INDEX, _safetensors), (HF_TORCH_WEIGHTS_INDEX, _torch_bin)):
        if (folder / index).is_file():
            shards = sorted(set(read_json(folder / index)["weight_map"].values()))
            return reader([folder / s for s in shards])
    if (folder / HF_WEIGHTS).is_file():
        return _safetensors([folder / HF_WEIGHTS])
    if (folder / HF_TORCH_WEIGHTS).is_file():
        return _torch_bin([folder / HF_TORCH_WEIGHTS])
    found = sorted(p.name for p in folder.iterdir())
    raise ValueError(f"no weights in {folder}: expected {HF_WEIGHTS} (or a sharded index, or {HF_TORCH_WEIGHTS}); "
                     f"found {found[:10]}")


# ------------------------------------------------------------------ tokenizer


def _token(value) -> str | None:
    """tokenizer_config.json spells a token as a string or as {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _template(folder: Path, cfg: dict) -> str | None:
    """The chat template: chat_template.jinja, chat_template.json, or tokenizer_config.json's entry."""
    if (folder / HF_CHAT_TEMPLATE).is_file():
        return (folder / HF_CHAT_TEMPLATE).read_text(encoding="utf-8")
    tpl = read_json(folder / HF_CHAT_TEMPLATE_JSON).get("chat_template", cfg.get("chat_template"))
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
    if (folder / HF_TOKENIZER).is_file():
        return (folder / HF_TOKENIZER).read_text(encoding="utf-8")
    try:  # a slow tokenizer only (sentencepiece tokenizer.model): let transformers convert it
        from transformers import AutoTokenizer  # optional heavy dependency, only for such folders

        tok = AutoTokenizer.from_pretrained(str(folder))
        return tok.backend_tokenizer.to_str()
    except Exception as e:  # noqa: BLE001 - any failure means: no usable tokenizer
        raise ValueError(f"{folder} has no {HF_TOKENIZER} and transformers could not build one ({e}); "
                         f"add the model's {HF_TOKENIZER} to the folder") from e


def tokenizer_from_folder(folder: Path, hf_config: dict) -> TokenizerFiles:
    """The tokenizer material of a Hugging Face model folder."""
    text = _tokenizer_json(folder)
    cfg = read_json(folder / HF_TOKENIZER_CONFIG)
    cfg = {**read_json(folder / HF_SPECIAL_TOKENS), **cfg}
    gen = read_json(folder / HF_GENERATION_CONFIG)

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


# ------------------------------------------------------------------ the folder, the hub


def is_hf_folder(folder: Path) -> bool:
    return (Path(folder) / HF_CONFIG).is_file()


def read_folder(folder: Path) -> Checkpoint:
    folder = Path(folder)
    if not is_hf_folder(folder):
        raise ValueError(f"{folder} has no {HF_CONFIG}: is it a Hugging Face model folder?")
    hf_config = read_json(folder / HF_CONFIG)
    names, get = weights(folder)
    return Checkpoint(hf_config, names, get, tokenizer_from_folder(folder, hf_config), str(folder))


def download(name: str, revision: str | None = None) -> Path:
    """Fetch a hub model's config, tokenizer and safetensors; ValueError when offline or unknown."""
    try:
        from huggingface_hub import snapshot_download  # optional dependency (llmcycle[hf]), only for hub names
    except ImportError as e:
        raise ValueError("importing from the hub needs huggingface_hub: pip install 'llmcycle[hf]'") from e
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=HUB_FILES))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated model...
        raise ValueError(f"could not fetch {name!r} from the Hugging Face hub ({type(e).__name__}: {e}); "
                         "offline machines can import a local folder or a .gguf file instead") from e
