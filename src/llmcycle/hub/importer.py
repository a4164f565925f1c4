"""`llmcycle import SOURCE --out DIR`: a pretrained model becomes an ordinary llmcycle run directory.

The run (layout in `rundir.py`) gets: its config (the ModelConfig read from the source), the
source's tokenizer with its bos/eos/pad roles, the Hugging Face prompt files (role tokens and
add_bos_token, the chat template when the source has one, bos/eos/pad ids where eos may list several
stop ids), the weights as checkpoint step 0 in fp32, and an import record (where it came from and
its original config).

Everything is validated in memory first (architecture, tensor names and shapes, tokenizer against
the embedding size), written into a temporary folder, and renamed into place.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer

from llmcycle import rundir
from llmcycle.atomic import atomic_dir, atomic_write_text
from llmcycle.checkpoint import save_weights
from llmcycle.config import DataConfig, RunConfig, TrainConfig
from llmcycle.data.tokenizer import Tokenizer
from llmcycle.hub.folder import HUB_NAME, download, is_hf_folder, read_folder
from llmcycle.hub.gguf import is_gguf, read_gguf
from llmcycle.hub.hf_config import architecture, model_config_from_hf
from llmcycle.hub.source import Checkpoint, TokenizerFiles
from llmcycle.hub.tensors import to_llmcycle
from llmcycle.models import build_model

IMPORTED_STEP = 0  # the imported weights are checkpoint step 0 of the new run


def load_source(source: str, revision: str | None = None) -> Checkpoint:
    """A GGUF file, a Hugging Face folder (or a folder holding exactly one .gguf), or a hub name."""
    path = Path(source).expanduser()
    if path.is_file():
        if is_gguf(path):
            return read_gguf(path)
        raise ValueError(f"{path} is a file but not a GGUF file; give a .gguf file, a Hugging Face model folder "
                         "or a hub name (org/name)")
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not is_hf_folder(path) and len(ggufs) == 1:
            return read_gguf(ggufs[0])
        return read_folder(path)
    if HUB_NAME.match(source):
        return read_folder(download(source, revision))
    raise ValueError(f"{source!r} is neither a file, a folder nor a hub name (org/name)")


def _token_string(hf, value) -> str | None:
    """A role given as an id or a string -> the token string (None stays None)."""
    if value is None or isinstance(value, str):
        return value
    token = hf.id_to_token(int(value))
    if token is None:
        raise ValueError(f"special token id {value} is not in the tokenizer's vocabulary")
    return token


def check_tokenizer(files: TokenizerFiles, vocab_size: int) -> dict:
    """Role token strings; ValueError when the tokenizer cannot index into a `vocab_size` embedding."""
    hf = HFTokenizer.from_str(files.tokenizer_json)
    n = hf.get_vocab_size(with_added_tokens=True)
    if n > vocab_size:
        raise ValueError(f"tokenizer/weights mismatch: the tokenizer has {n} tokens but the embedding only "
                         f"{vocab_size} rows; the tokenizer does not belong to these weights")
    roles = {r: _token_string(hf, getattr(files, r)) for r in ("bos", "eos", "pad")}
    for role, token in roles.items():
        if token is not None and hf.token_to_id(token) is None:
            raise ValueError(f"the {role} token {token!r} is not in the tokenizer")
    return roles


def _side_files(tmp: Path, files: TokenizerFiles, tok, roles: dict) -> None:
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", **{f"{r}_token": t for r, t in roles.items()},
            "add_bos_token": files.add_bos}
    eos = [tok.eos_id] if tok.eos_id is not None else []
    eos += [i for i in files.stop_ids if i not in eos]
    gen = {"bos_token_id": tok.bos_id, "eos_token_id": eos[0] if len(eos) == 1 else eos or None,
           "pad_token_id": tok.pad_id}
    rundir.write_prompt_files(tmp, tcfg, gen, files.chat_template)


def _target(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
        if not rundir.is_run(out):
            raise ValueError(f"{out} is not an llmcycle run directory; refusing to overwrite it")


def import_model(source: str, out: Path, revision: str | None = None, overwrite: bool = False) -> dict:
    """Import `source` into the run directory `out`; returns a summary."""
    out = Path(out)
    _target(out, overwrite)
    ckpt = load_source(source, revision)
    arch = architecture(ckpt.hf_config)
    cfg = model_config_from_hf(ckpt.hf_config)
    roles = check_tokenizer(ckpt.tokenizer, cfg.vocab_size)
    state = to_llmcycle(ckpt.names, ckpt.get, cfg, arch, where=ckpt.origin)
    with torch.device("meta"):  # no initialisation: every tensor comes from the source
        model = build_model(cfg)
    model.load_state_dict(state, assign=True)  # strict: names and shapes are checked once more
    if cfg.tie_embeddings:
        model.head.weight = model.embed.tok.weight
    del state
    with atomic_dir(out) as tmp:
        ckpt_dir = rundir.step_dir(tmp, IMPORTED_STEP)
        ckpt_dir.mkdir(parents=True)
        save_weights(model, ckpt_dir / rundir.WEIGHTS)
        tok_path = rundir.tokenizer_path(tmp)
        atomic_write_text(tok_path, ckpt.tokenizer.tokenizer_json)
        tok = Tokenizer.from_hf(tok_path, **roles)
        tok.save(tok_path.parent)
        _side_files(tmp, ckpt.tokenizer, tok, roles)
        train = TrainConfig(seq_len=min(256, cfg.max_seq_len), max_time=180.0, init_from=None)
        rundir.save_config(tmp, RunConfig(model=cfg, data=DataConfig(), train=train))
        record = {"source": source, "origin": ckpt.origin, "architecture": arch, "hf_config": ckpt.hf_config}
        atomic_write_text(rundir.import_record_path(tmp), json.dumps(record, indent=2, default=str) + "\n")
    params = sum(p.numel() for p in model.parameters())
    return {"out": str(out), "architecture": arch, "params": params, "vocab": tok.vocab_size,
            "layers": cfg.n_layer, "context": cfg.max_seq_len, "chat_template": bool(ckpt.tokenizer.chat_template)}
