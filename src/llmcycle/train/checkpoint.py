"""Checkpoints complete enough to resume exactly, written atomically.

    checkpoints/step_N/model.safetensors   weights of the unwrapped module (tied tensors once)
    checkpoints/step_N/optimizer.pt        optimizer state
    checkpoints/step_N/rng.pt              torch / numpy / python RNG states
    checkpoints/step_N/state.json          loop state: step, tokens, fixed total steps, elapsed time...

Everything is written into `.step_N.tmp/`, each file fsynced, then the directory is renamed to
`step_N` and its parent fsynced. A crash at any point leaves either no `step_N` or a whole one,
and the previous checkpoint untouched. Old checkpoints beyond `keep` are deleted after.
This is the single-process format; under ddp/fsdp `dist_checkpoint.py` writes a sharded one
(same model.safetensors and state.json, optimizer state in `dcp/`), and loads either.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_model

from llmcycle.rundir import checkpoints_dir, list_checkpoints, load_weights
from llmcycle.runtime import fsync_dir


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(run: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict, keep: int = 2) -> Path:
    root = checkpoints_dir(run)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        for f in tmp.iterdir():
            _fsync_file(f)
        fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. a resumed run's last step)
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_partial(run: Path) -> list[str]:
    """Delete temporary checkpoint dirs left by a killed process; returns their names."""
    root = checkpoints_dir(run)
    stale = [p for p in root.glob(".step_*.tmp")] if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return [p.name for p in stale]


def load_checkpoint(ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore weights (and optimizer and RNG when resuming); returns the loop state."""
    load_weights(model, ckpt / "model.safetensors")
    state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        set_rng_state(torch.load(ckpt / "rng.pt", weights_only=False))
    return state
