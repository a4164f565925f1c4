"""What the training loop needs to fine-tune instead of pretrain, and what a fine-tune leaves behind.

    FinetuneBatches  the loop's `Batches` (train/batches.py): step s draws rows global_batch_ids(s) of the
                     training rows (a pure function of seed and step: exact resume), each micro-batch the
                     forward's kwargs (idx, masked targets[, pos, attn_mask]); validation covers every
                     held-out example once. build_model() = base config + base weights [+ LoRA adapters]
    save_adapter     RUN/adapter.safetensors: the adapter tensors alone (atomic)
    merge_run        a LoRA run -> a plain run directory (base weights + adapters folded in), atomic,
                     which generate / eval / export / serve read with no adapter code
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

from llmcycle import rundir
from llmcycle.atomic import atomic_dir, atomic_write_bytes, atomic_write_text
from llmcycle.checkpoint import load_weights, save_weights
from llmcycle.config import ModelConfig, RunConfig
from llmcycle.data.loader import global_batch_ids, rank_share
from llmcycle.finetune.data import IGNORE, Rows
from llmcycle.finetune.lora import LoraSpec, add_lora, adapter_state, merge_into
from llmcycle.lifecycle.report import plot_loss, read_metrics
from llmcycle.models import build_model
from llmcycle.train.batches import Batches


@dataclass
class FinetuneBatches(Batches):
    model_cfg: ModelConfig
    base_weights: Path  # model.safetensors of the run fine-tuned from
    train: Rows
    val: Rows
    lora: LoraSpec | None
    batch_size: int  # rows per optimizer step, all ranks
    seq_len: int
    seed: int
    bytes_per_token: float  # of the validation targets: val loss / ln 2 / this = bits per byte
    model: torch.nn.Module | None = field(default=None, init=False)  # what build_model built (the loop trains it)

    @property
    def tokens_per_step(self) -> int:  # row slots; `real_tokens_trained` counts the tokens without padding
        return self.batch_size * self.seq_len

    def micro_batches(self, step, rank, world_size, micro, accum) -> list[dict]:
        ids = rank_share(global_batch_ids(step, self.batch_size, len(self.train), self.seed), rank, world_size)
        return [self.train.get(ids[i * micro:(i + 1) * micro]) for i in range(accum)]

    def validation(self, rank, world_size) -> dict[str, list[dict]]:
        """Every validation row once, in batches of at most batch_size rows (each rank its share)."""
        n, b = len(self.val), self.batch_size
        batches = [np.arange(i, min(n, i + b)) for i in range(0, n, b)]
        share = lambda ids: ids[rank::world_size] if len(ids) >= world_size else ids  # noqa: E731
        return {"": [self.val.get(share(ids)) for ids in batches]}

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
    meta = {"format": "llmcycle-lora", "lora": json.dumps(spec.to_dict()), "base": base}
    path = rundir.adapter_path(run)
    atomic_write_bytes(path, save(adapter_state(model), metadata=meta))
    return path


def load_finetuned(run: Path, device: str = "cpu") -> tuple[torch.nn.Module, RunConfig, dict]:
    """A fine-tuned run's newest model as trained (LoRA runs: base + adapters), with its finetune.json."""
    run = Path(run)
    if not rundir.finetune_path(run).is_file():
        raise ValueError(f"{run} is not a fine-tuned run (no {rundir.FINETUNE}); `llmcycle finetune` makes one")
    spec = json.loads(rundir.finetune_path(run).read_text(encoding="utf-8"))
    cfg = rundir.load_config(run)
    model = build_model(cfg.model)
    if spec["method"] == "lora" and not spec.get("merged"):
        add_lora(model, LoraSpec(**spec["lora"]))
    load_weights(model, rundir.weights_path(run))
    return model.to(device).eval(), cfg, spec


def merge_run(run: Path, out: Path) -> Path:
    """Write OUT: run's config, tokenizer and prompt files, and one checkpoint of merged plain weights.
    Built under a temporary name and renamed, so OUT is whole or absent."""
    run, out = Path(run), Path(out)
    if out.exists():
        raise ValueError(f"--merge {out} already exists; give a new directory")
    model, cfg, spec = load_finetuned(run)
    if spec["method"] != "lora" or spec.get("merged"):
        raise ValueError(f"{run} is a {'merged' if spec.get('merged') else 'full'} fine-tune: its weights are plain "
                         "already (generate / eval / export read it as it is)")
    step = rundir.read_state(rundir.latest_checkpoint(run))["step"]
    merged = merge_into(build_model(cfg.model), model)
    with atomic_dir(out) as tmp:
        ckpt = rundir.step_dir(tmp, step)
        ckpt.mkdir(parents=True)
        save_weights(merged, ckpt / rundir.WEIGHTS)
        atomic_write_text(rundir.state_path(ckpt), json.dumps({"step": step, "merged_from": str(run)}) + "\n")
        rundir.save_config(tmp, cfg)
        copy_model_files(run, tmp)
        atomic_write_text(rundir.finetune_path(tmp), json.dumps({**spec, "merged": True, "merged_from": str(run)},
                                                                indent=2) + "\n")
    return out


def copy_model_files(src: Path, dst: Path) -> None:
    """The tokenizer and prompt-convention files of run `src`, into run `dst` at the same places."""
    for rel, path in rundir.model_files(src).items():
        (Path(dst) / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(dst) / rel)


def real_tokens_trained(rows: Rows, steps: int, batch_size: int, seed: int) -> int:
    """Non-padding input tokens the first `steps` optimizer steps drew (the loop's batches by step)."""
    return sum(rows.real_tokens(global_batch_ids(s, batch_size, len(rows), seed)) for s in range(steps))


def write_report(run: Path, spec: dict, result: dict, notes: list[str]) -> Path:
    """RUN/report.md (what was trained, on what, at what cost, validation before/after) and the loss curve."""
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
        plot_loss(run, rundir.loss_plot_path(run))
        lines += ["", f"![loss curve]({rundir.LOSS_PLOT})"]
    except ImportError:  # matplotlib absent: the table alone
        pass
    atomic_write_text(rundir.report_path(run), "\n".join(lines) + "\n")
    return rundir.report_path(run)


def steps_for_epochs(epochs: float, rows: int, batch_size: int) -> int:
    return max(1, math.ceil(epochs * rows / batch_size))
