"""Read a Hugging Face model folder (config.json + safetensors or PyTorch weights), or fetch one from the hub.

Weights are read lazily, one tensor at a time, from `model.safetensors`, a sharded
`model.safetensors.index.json`, or `pytorch_model.bin` (loaded with `weights_only=True`).
A hub name (`org/name`) is downloaded with `huggingface_hub.snapshot_download` when the machine is
online; offline, the error says so.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from llmcycle.hub.source import Checkpoint, read_json, tokenizer_from_folder

HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")
HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]


def _safetensors(files: list[Path]):
    from safetensors import safe_open

    handles = {f: safe_open(str(f), framework="pt") for f in files}
    where = {name: f for f, h in handles.items() for name in h.keys()}
    return list(where), lambda name: handles[where[name]].get_tensor(name)


def _torch_bin(files: list[Path]):
    state = {}
    for f in files:
        state.update(torch.load(f, map_location="cpu", weights_only=True, mmap=True))
    return list(state), state.__getitem__


def weights(folder: Path):
    """(tensor names, loader) for the weights in `folder`."""
    for index, reader in (("model.safetensors.index.json", _safetensors), ("pytorch_model.bin.index.json", _torch_bin)):
        if (folder / index).is_file():
            shards = sorted(set(read_json(folder / index)["weight_map"].values()))
            return reader([folder / s for s in shards])
    if (folder / "model.safetensors").is_file():
        return _safetensors([folder / "model.safetensors"])
    if (folder / "pytorch_model.bin").is_file():
        return _torch_bin([folder / "pytorch_model.bin"])
    found = sorted(p.name for p in folder.iterdir())
    raise ValueError(f"no weights in {folder}: expected model.safetensors (or a sharded index, or pytorch_model.bin); "
                     f"found {found[:10]}")


def read_folder(folder: Path) -> Checkpoint:
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: is it a Hugging Face model folder?")
    hf_config = read_json(folder / "config.json")
    names, get = weights(folder)
    return Checkpoint(hf_config, names, get, tokenizer_from_folder(folder, hf_config), str(folder))


def download(name: str, revision: str | None = None) -> Path:
    """Fetch a hub model's config, tokenizer and safetensors; ValueError when offline or unknown."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise ValueError("importing from the hub needs huggingface_hub: pip install 'llmcycle[hf]'") from e
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=HUB_FILES))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated model...
        raise ValueError(f"could not fetch {name!r} from the Hugging Face hub ({type(e).__name__}: {e}); "
                         "offline machines can import a local folder or a .gguf file instead") from e
