"""What the training loop needs to fine-tune instead of pretrain, and what a fine-tune leaves behind.

    FinetuneSource   build_model() = base config + base weights [+ LoRA adapters]; train/val rows whose
                     get(ids) is the forward's kwargs; a pass-through objective; validation batches
                     covering the held-out split once
    save_adapter     RUN/adapter.safetensors: the adapter tensors alone (atomic)
    merge_run        a LoRA run -> a plain run directory (base weights + adapters folded in), atomic,
                     which generate / eval / export / serve read with no adapter code
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from llmcycle.config import ModelConfig, RunConfig
from llmcycle.finetune.data import IGNORE, Rows
from llmcycle.finetune.lora import LoraSpec, add_lora, adapter_state, merge_into
from llmcycle.models import build_model
from llmcycle.rundir import (ADAPTER, checkpoints_dir, config_path, finetune_path, latest_checkpoint, load_weights,
                             model_files, weights_path)
from llmcycle.runtime import atomic_write_bytes, atomic_write_text, fsync_dir


def passthrough(batch: dict, generator=None) -> dict:
    """The objective of ready-made batches: the rows already hold idx and masked targets."""
    return batch


@dataclass
class FinetuneSource:
    model_cfg: ModelConfig
    base_weights: Path  # model.safetensors of the run fine-tuned from
    train: Rows
    val: Rows
    lora: LoraSpec | None
    micro_batch: int
    bytes_per_token: float  # of the validation targets: val loss / ln 2 / this = bits per byte
    model: torch.nn.Module | None = field(default=None, init=False)  # what build_model built (the loop trains it)
    objective = staticmethod(passthrough)

    @property
    def val_batches(self) -> list[np.ndarray]:
        """Every validation row once, in batches of at most micro_batch rows."""
        n = len(self.val)
        return [np.arange(i, min(n, i + self.micro_batch)) for i in range(0, n, self.micro_batch)]

    def meta_model(self) -> torch.nn.Module:
        """The model to train on the meta device (no memory, no weights): checks the LoRA targets, counts."""
        with torch.device("meta"):
            model = build_model(self.model_cfg)
            return add_lora(model, self.lora) if self.lora else model

    def build_model(self) -> torch.nn.Module:
        model = build_model(self.model_cfg)
        load_weights(model, self.base_weights)
        self.model = add_lora(model, self.lora) if self.lora else model
        return self.model


def target_bytes_per_token(rows: Rows, tok) -> float:
    """UTF-8 bytes per target token of `rows` (what bits per byte is measured against)."""
    ids = [t for _, y in rows.pieces for t in y if t != IGNORE]
    return max(1.0, len(tok.decode(ids).encode("utf-8"))) / max(1, len(ids))


def save_adapter(run: Path, model: torch.nn.Module, spec: LoraSpec, base: str) -> Path:
    from safetensors.torch import save

    meta = {"format": "llmcycle-lora", "lora": json.dumps(spec.to_dict()), "base": base}
    path = Path(run) / ADAPTER
    atomic_write_bytes(path, save(adapter_state(model), metadata=meta))
    return path


def load_finetuned(run: Path, device: str = "cpu") -> tuple[torch.nn.Module, RunConfig, dict]:
    """A fine-tuned run's newest model as trained (LoRA runs: base + adapters), with its finetune.json."""
    run = Path(run)
    if not finetune_path(run).is_file():
        raise ValueError(f"{run} is not a fine-tuned run (no {finetune_path(run).name}); `llmcycle finetune` makes one")
    spec = json.loads(finetune_path(run).read_text(encoding="utf-8"))
    cfg = RunConfig.load(config_path(run))
    model = build_model(cfg.model)
    if spec["method"] == "lora" and not spec.get("merged"):
        add_lora(model, LoraSpec(**spec["lora"]))
    load_weights(model, weights_path(run))
    return model.to(device).eval(), cfg, spec


def merge_run(run: Path, out: Path) -> Path:
    """Write OUT: run's config, tokenizer and prompt files, and one checkpoint of merged plain weights.
    Built under a temporary name and renamed, so OUT is whole or absent."""
    from safetensors.torch import save_model

    run, out = Path(run), Path(out)
    if out.exists():
        raise ValueError(f"--merge {out} already exists; give a new directory")
    model, cfg, spec = load_finetuned(run)
    if spec["method"] != "lora" or spec.get("merged"):
        raise ValueError(f"{run} is a {'merged' if spec.get('merged') else 'full'} fine-tune: its weights are plain "
                         "already (generate / eval / export read it as it is)")
    ckpt = latest_checkpoint(run)
    step = int(json.loads((ckpt / "state.json").read_text())["step"]) if ckpt else 0
    base = build_model(cfg.model)
    merged = merge_into(base, model)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        final = checkpoints_dir(tmp) / f"step_{step:06d}"
        final.mkdir(parents=True)
        save_model(merged, str(final / weights_path(ckpt).name))
        atomic_write_text(final / "state.json", json.dumps({"step": step, "merged_from": str(run)}) + "\n")
        cfg.save(config_path(tmp))
        for name, src in model_files(run).items():
            shutil.copyfile(src, tmp / name)
        atomic_write_text(finetune_path(tmp), json.dumps({**spec, "merged": True, "merged_from": str(run)},
                                                         indent=2) + "\n")
        fsync_dir(tmp)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def real_tokens_trained(rows: Rows, steps: int, batch_size: int, seed: int) -> int:
    """Non-padding input tokens the first `steps` optimizer steps drew (the loop's batches by step)."""
    from llmcycle.data.loader import global_batch_ids

    return sum(rows.real_tokens(global_batch_ids(s, batch_size, len(rows), seed)) for s in range(steps))


def write_report(run: Path, spec: dict, result: dict, notes: list[str]) -> Path:
    """RUN/report.md (what was trained, on what, at what cost, validation before/after) and the loss curve."""
    from llmcycle.report import plot_loss, read_metrics
    from llmcycle.rundir import LOSS_PLOT, REPORT

    run = Path(run)
    _, vals = read_metrics(run)
    method = spec["method"] + (f" (rank {spec['lora']['rank']}, alpha {spec['lora']['alpha']:g}, dropout "
                               f"{spec['lora']['dropout']:g}, targets {', '.join(spec['lora']['targets'])})"
                               if spec["method"] == "lora" else "")
    lines = [f"# Fine-tune {run.name}", "", f"- base: `{spec['base']}`", f"- method: {method}",
             f"- data: `{spec['data']['source']}`, loss on {spec['data']['train_on']} tokens, "
             f"{'packed' if spec['pack'] else 'padded'} rows", *[f"- {n}" for n in notes], "",
             "| | value |", "|---|---:|",
             f"| trainable parameters | {result['trainable_params']:,} of {result['total_params']:,} |",
             f"| optimizer steps | {result['steps']} |", f"| tokens trained (no padding) | {result['tokens_trained']:,} |",
             f"| wall time (s) | {result['wall_s']:.0f} |", f"| peak memory (RSS, GiB) | {result['peak_rss_bytes'] / 2**30:.2f} |"]
    if vals:
        lines.append(f"| validation loss, first -> last evaluation | {vals[0]['val_loss']:.4f} -> {vals[-1]['val_loss']:.4f} |")
    if "adapter_bytes" in result:
        lines.append(f"| adapter file (MiB) | {result['adapter_bytes'] / 2**20:.1f} |")
    try:
        plot_loss(run, run / LOSS_PLOT)
        lines += ["", f"![loss curve]({LOSS_PLOT})"]
    except ImportError:  # matplotlib absent: the table alone
        pass
    atomic_write_text(run / REPORT, "\n".join(lines) + "\n")
    return run / REPORT


def steps_for_epochs(epochs: float, rows: int, batch_size: int) -> int:
    return max(1, math.ceil(epochs * rows / batch_size))
