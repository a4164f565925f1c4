"""What every import source (a Hugging Face folder, the hub, a GGUF file) is read into.

A `Checkpoint` holds a Hugging Face style config dict, the tensor names with a loader for each
(Hugging Face names, so one mapping in `tensors.py` serves every source), and the tokenizer
material (`TokenizerFiles`): `tokenizer.json` text, the token strings that play bos/eos/pad,
whether prompts start with bos, the chat template and extra stop ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # annotations only: reading a source's description needs no torch
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
