"""The run directory: how stages hand work to each other.

    RUN/config.json            RunConfig (model, data, train): enough to rebuild everything
    RUN/data/                  token shards, meta.json, tokenizer.json   (llmcycle prepare)
    RUN/checkpoints/step_N/    model.safetensors, optimizer.pt, rng.pt, state.json   (llmcycle train)
    RUN/metrics.jsonl          one JSON object per logged step / evaluation
    RUN/samples.md, RUN/report.md, RUN/loss.png   (llmcycle run)

A checkpoint directory is written under a temporary name and renamed when complete, so any
`step_N` that exists is whole. `load_model` rebuilds a model from any run directory (trained
here or imported) using only the newest complete checkpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open

from llmcycle.config import RunConfig

STEP_DIR = re.compile(r"^step_(\d+)$")
WEIGHTS = "model.safetensors"
CHECKPOINT_STATE = "state.json"  # the loop state saved with each checkpoint (train/checkpoint.py)


def config_path(run: Path) -> Path:
    return Path(run) / "config.json"


def data_dir(run: Path) -> Path:
    return Path(run) / "data"


def checkpoints_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


def list_checkpoints(run: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(run)
    if not root.is_dir():
        return []
    steps = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(steps)]


def latest_checkpoint(run: Path) -> Path | None:
    ckpts = list_checkpoints(run)
    return ckpts[-1] if ckpts else None


def checkpoint_state(ckpt: Path) -> dict:
    """The loop state saved with a checkpoint: step, tokens, total_steps, elapsed, val (its last evaluation)."""
    return json.loads((Path(ckpt) / CHECKPOINT_STATE).read_text(encoding="utf-8"))


def weights_path(run_or_ckpt: Path) -> Path:
    """model.safetensors of a checkpoint dir, or of a run dir's newest checkpoint."""
    p = Path(run_or_ckpt)
    if (p / WEIGHTS).is_file():
        return p / WEIGHTS
    ckpt = latest_checkpoint(p)
    if ckpt is None:
        raise ValueError(f"no checkpoint in {p}: train it first (`llmcycle train --run {p}`) or import a model")
    return ckpt / WEIGHTS


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Copy safetensors weights into `model` one tensor at a time from the memory-mapped file (no
    second state dict in memory), naming missing, unexpected or misshapen tensors. A tensor tied to a
    loaded one (a shared embedding and head) counts as loaded."""
    params = model.state_dict(keep_vars=True)  # name -> Parameter / buffer; tied tensors under each name
    loaded: set[int] = set()
    with safe_open(str(path), framework="pt", device="cpu") as f:
        names = set(f.keys())
        for name in sorted(names & params.keys()):
            t, dst = f.get_tensor(name), params[name]
            if t.shape != dst.shape:
                raise ValueError(f"weights in {path} do not fit the model in config.json: {name} is "
                                 f"{tuple(t.shape)} in the file, {tuple(dst.shape)} in the model")
            with torch.no_grad():
                dst.copy_(t)
            loaded.add(dst.data_ptr())
    missing = [n for n, t in params.items() if n not in names and t.data_ptr() not in loaded]
    unexpected = sorted(names - params.keys())
    if missing or unexpected:
        raise ValueError(f"weights in {path} do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def load_model(run: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, RunConfig]:
    """Rebuild the model of a run directory and load its newest weights; eval mode."""
    from llmcycle.models import build_model

    run = Path(run)
    cfg = RunConfig.load(config_path(run))
    model = build_model(cfg.model).to(device)
    load_weights(model, weights_path(run))
    return model.eval(), cfg


def load_tokenizer(run: Path):
    from llmcycle.data.tokenizer import Tokenizer

    path = data_dir(run) / "tokenizer.json"
    if not path.is_file():
        path = Path(run) / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"no tokenizer.json in {run} or {data_dir(run)}: run `llmcycle prepare --run {run}` first")
    return Tokenizer.load(path)
