"""Checkpoints under ddp / fsdp with `torch.distributed.checkpoint` (DCP), and the one entry point
the loop calls for any strategy and any world size.

    checkpoints/step_N/model.safetensors   full weights, written by rank 0 (what `rundir.load_model` reads)
    checkpoints/step_N/dcp/                model + optimizer, sharded: each rank writes its own part
    checkpoints/step_N/rng_R.pt            RNG state of rank R
    checkpoints/step_N/state.json          loop state (same as a single-process checkpoint)

Atomic as the single-process format (`checkpoint.py`): every rank writes into `.step_N.tmp/`, a
barrier waits for all of them, then rank 0 fsyncs, renames the directory to `step_N` and prunes
old ones. A rank dying mid-save leaves only the temporary directory, which the next run deletes.

Resuming reads either format into any world size: DCP reshards on load (saved by 2 ranks, loaded
by 1 or 3), and a single-process checkpoint (`optimizer.pt` keyed by parameter index) is turned
into a full, name-keyed state that FSDP distributes to its shards.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from llmcycle.rundir import WEIGHTS, checkpoints_dir, list_checkpoints, load_weights
from llmcycle.runtime import fsync_dir, is_main, world
from llmcycle.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from llmcycle.train.parallel import is_fsdp, tied_names

DCP_DIR = "dcp"


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def is_sharded_checkpoint(ckpt: Path) -> bool:
    return (Path(ckpt) / DCP_DIR).is_dir()


# ------------------------------------------------------------------ save


def save(run: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, keep: int,
         strategy: str) -> Path:
    """Write checkpoint `step` collectively: DCP under ddp/fsdp, the single-file format otherwise."""
    final = checkpoints_dir(run) / f"step_{step:06d}"
    if strategy == "single":
        if is_main():
            save_checkpoint(run, step, model, optimizer, state, keep)
        _barrier()
        return final
    save_sharded(run, step, model, optimizer, state, keep)
    return final


def save_sharded(run: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                 keep: int) -> Path:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = checkpoints_dir(run)
    final, tmp = root / f"step_{step:06d}", root / f".step_{step:06d}.tmp"
    rank = world()[0]
    if is_main():
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    _barrier()
    try:
        model_sd, optim_sd = get_state_dict(model, optimizer)  # DTensor shards under FSDP
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp / DCP_DIR)
        full = full_state_dict(model)  # collective; only rank 0 gets the tensors
        torch.save(rng_state(), tmp / f"rng_{rank}.pt")
        if is_main():
            write_safetensors(model, full, tmp / WEIGHTS)
            (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        _barrier()  # every rank's files are written
        if is_main():
            _fsync_tree(tmp)
            if final.exists():  # re-saving the same step (a resumed run's last step)
                shutil.rmtree(final)
            os.rename(tmp, final)
            fsync_dir(root)
            for old in list_checkpoints(run)[:-keep] if keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if is_main():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    _barrier()  # nobody moves on (or reads the checkpoint) before the rename
    return final


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's tensors on CPU, gathered to rank 0 (other ranks get {})."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def write_safetensors(model: nn.Module, full: dict[str, torch.Tensor], path: Path) -> None:
    """The same file `safetensors.torch.save_model` writes for the unwrapped model: each tied
    tensor once under its first sorted name, the dropped names in the metadata."""
    from safetensors.torch import save_file

    full, metadata = dict(full), {}
    for kept, dropped in tied_names(model).items():
        for name in dropped:
            full.pop(name, None)
            metadata[name] = kept
    save_file({k: v.contiguous() for k, v in full.items()}, str(path), metadata=metadata or None)


def _fsync_tree(path: Path) -> None:
    for d, _, files in os.walk(path):
        for f in files:
            with open(Path(d) / f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(d))


# ------------------------------------------------------------------ load


def load(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore any checkpoint into `model` (plain, DDP's inner module, or FSDP-sharded) and, when
    resuming, the optimizer and RNG. Returns the loop state."""
    ckpt = Path(ckpt)
    if is_sharded_checkpoint(ckpt):
        return load_sharded(ckpt, model, optimizer)
    if is_fsdp(model):
        return load_single_into_fsdp(ckpt, model, optimizer)
    return load_checkpoint(ckpt, model, optimizer)


def load_sharded(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """DCP reshards: each rank reads the pieces of the saved shards that overlap what it holds now."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_state_dict, set_model_state_dict,
                                                         set_state_dict)

    if optimizer is None:
        model_sd = get_model_state_dict(model)
        dcp.load({"model": model_sd}, checkpoint_id=ckpt / DCP_DIR, no_dist=not dist.is_initialized())
        set_model_state_dict(model, model_sd)
    else:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        dcp.load({"model": model_sd, "optim": optim_sd}, checkpoint_id=ckpt / DCP_DIR,
                 no_dist=not dist.is_initialized())
        set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
        _load_rng(ckpt)
    return json.loads((ckpt / "state.json").read_text(encoding="utf-8"))


def _load_rng(ckpt: Path) -> None:
    """This rank's RNG if it saved one, else rank 0's (same world size: exact; otherwise the best there is)."""
    rank = world()[0]
    for name in (f"rng_{rank}.pt", "rng_0.pt", "rng.pt"):
        if (ckpt / name).is_file():
            set_rng_state(torch.load(ckpt / name, weights_only=False))
            return
    raise ValueError(f"{ckpt} has no RNG state (rng_R.pt or rng.pt); is it a complete checkpoint?")


def load_weights_any(model: nn.Module, path: Path) -> None:
    """`rundir.load_weights` for any model: an FSDP-sharded model takes the full file and keeps its shards."""
    if not is_fsdp(model):
        return load_weights(model, path)
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full = load_file(str(path))
    for kept, dropped in tied_names(model).items():  # the file holds a tied tensor once: give it every name
        group = [kept, *dropped]
        present = next((n for n in group if n in full), None)
        for name in group if present else []:
            full.setdefault(name, full[present])
    try:
        set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True))
    except (RuntimeError, KeyError) as e:
        raise ValueError(f"weights in {path} do not fit the model in config.json: {e}") from e


def load_single_into_fsdp(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """A single-process checkpoint into a sharded model: full weights and a full, name-keyed
    optimizer state, which `set_*_state_dict` cut into this rank's shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    load_weights_any(model, ckpt / WEIGHTS)
    if optimizer is not None:
        saved = torch.load(ckpt / "optimizer.pt", weights_only=True)
        set_optimizer_state_dict(model, optimizer, by_name(model, optimizer, saved),
                                 options=StateDictOptions(full_state_dict=True))
        _load_rng(ckpt)
    return json.loads((ckpt / "state.json").read_text(encoding="utf-8"))


def by_name(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> dict:
    """Re-key `torch.optim` state (parameters numbered in param_group order) by parameter name.
    `build_optimizer` orders parameters the same way before and after sharding, so index i of the
    saved state is index i of `optimizer` now."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    names = [name_of[id(p)] for g in optimizer.param_groups for p in g["params"]]
    n_saved = sum(len(g["params"]) for g in saved["param_groups"])
    if n_saved != len(names):
        raise ValueError(f"optimizer state has {n_saved} parameters but the model {len(names)}; "
                         "the checkpoint belongs to another model")
    groups, i = [], 0
    for g in saved["param_groups"]:
        groups.append({**g, "params": names[i:i + len(g["params"])]})
        i += len(g["params"])
    return {"state": {names[k]: v for k, v in saved["state"].items()}, "param_groups": groups}
