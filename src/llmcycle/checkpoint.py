"""Checkpoints complete enough to resume exactly, for 1 process or N (DDP / FSDP), and loading
weights into any model.

    single process                          ddp / fsdp (torch.distributed.checkpoint, DCP)
    step_N/model.safetensors  weights       step_N/model.safetensors  full weights (rank 0)
    step_N/optimizer.pt       optimizer     step_N/dcp/               model + optimizer, sharded per rank
    step_N/rng.json           RNG states    step_N/rng_R.json         RNG states of rank R
    step_N/state.json         loop state    step_N/state.json         loop state

Both are written with `llmcycle.atomic`'s protocol into `.step_N.tmp/` and renamed when whole; under
ddp/fsdp rank 0 makes the folder, every rank writes its part, rank 0 renames, and after each of these
three the ranks exchange their outcomes (one all-gather; DCP does the same inside its save): a write
that fails on any rank (a full disk, a read-only folder) fails on every rank at once, naming that rank
and what it was writing, instead of leaving the others waiting until --dist-timeout. RNG states are JSON
(never a pickle: a checkpoint may come from someone else). `load` reads either format into any world
size: DCP reshards on load (saved by 2 ranks, loaded by 1 or 3), and a single-process checkpoint
(`optimizer.pt` keyed by parameter index) becomes a full, name-keyed state that FSDP cuts into shards.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file, save_model
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict, set_state_dict)
from torch.distributed.fsdp import FSDPModule

from llmcycle import rundir
from llmcycle.atomic import abort_dir, atomic_write_text, begin_dir, commit_dir, temp_dir_for
from llmcycle.runtime import is_main, world

# ------------------------------------------------------------------ RNG state as JSON


def rng_state() -> dict:
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state().tolist(),
            "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
            "python": [py_version, list(py_state), py_gauss]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))


def _load_rng(ckpt: Path) -> None:
    """This rank's RNG if it saved one, else the single-process / rank-0 one (same world size:
    exact; otherwise the best there is)."""
    rank = world()[0]
    for path in (rundir.rng_path(ckpt, rank), rundir.rng_path(ckpt), rundir.rng_path(ckpt, 0)):
        if path.is_file():
            try:
                return set_rng_state(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path} is damaged ({e}); resume from an earlier checkpoint") from e
    if any(Path(ckpt).glob("rng*.pt")):
        raise ValueError(f"{ckpt} stores its RNG state as a pickle (rng.pt, llmcycle 0.1), which is not loaded "
                         "because unpickling runs code; continue from its weights with `--init-from` instead")
    raise ValueError(f"{ckpt} has no RNG state ({rundir.rng_path(ckpt).name}); is it a complete checkpoint?")


# ------------------------------------------------------------------ tied parameters and FSDP


def tied_names(model: nn.Module) -> dict[str, list[str]]:
    """{kept name: [other names of the same Parameter]}; kept = first in sorted order, as safetensors' save_model."""
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    groups = [sorted(names) for names in by_id.values() if len(names) > 1]
    return {g[0]: g[1:] for g in groups}


def is_fsdp(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


# ------------------------------------------------------------------ weights


def load_weights(model: nn.Module, path: Path) -> None:
    """Copy safetensors weights into `model` one tensor at a time from the memory-mapped file (no
    second state dict in memory), naming missing, unexpected or misshapen tensors. A tensor tied to a
    loaded one (a shared embedding and head) counts as loaded. An FSDP-sharded model takes the full
    file and keeps its shards."""
    if is_fsdp(model):
        return _load_weights_fsdp(model, path)
    params = model.state_dict(keep_vars=True)  # name -> Parameter / buffer; tied tensors under each name
    loaded: set[int] = set()
    try:
        f = safe_open(str(path), framework="pt", device="cpu")
    except Exception as e:  # a truncated or foreign file: safetensors' own error says which
        raise ValueError(f"{path} cannot be read as safetensors ({e}); the file is damaged or incomplete") from e
    with f:
        names = set(f.keys())
        for name in sorted(names & params.keys()):
            t, dst = f.get_tensor(name), params[name]
            if t.shape != dst.shape:
                raise ValueError(f"weights in {path} do not fit the model in config.json: {name} is "
                                 f"{tuple(t.shape)} in the file, {tuple(dst.shape)} in the model (the checkpoint "
                                 "was saved with a different model config; use the run it came from)")
            with torch.no_grad():
                dst.copy_(t)
            loaded.add(dst.data_ptr())
    missing = [n for n, t in params.items() if n not in names and t.data_ptr() not in loaded]
    unexpected = sorted(names - params.keys())
    if missing or unexpected:
        raise ValueError(f"weights in {path} do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]} "
                         "(saved from a different model config; use the run it came from)")


def _load_weights_fsdp(model: nn.Module, path: Path) -> None:
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


def save_weights(model: nn.Module, path: Path, full: dict[str, torch.Tensor] | None = None) -> None:
    """model.safetensors for the unwrapped model: each tied tensor once under its first sorted name,
    the dropped names in the metadata (what `safetensors.torch.save_model` writes). `full`: the
    tensors gathered from a sharded model."""
    if full is None:
        return save_model(model, str(path))
    full, metadata = dict(full), {}
    for kept, dropped in tied_names(model).items():
        for name in dropped:
            full.pop(name, None)
            metadata[name] = kept
    save_file({k: v.contiguous() for k, v in full.items()}, str(path), metadata=metadata or None)


# ------------------------------------------------------------------ save


def save(run: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, keep: int,
         sharded: bool) -> Path:
    """Write checkpoint `step` (collectively when `sharded`) and prune to the newest `keep`."""
    final = rundir.step_dir(run, step)
    try:
        if sharded:
            _save_sharded(final, model, optimizer, state)
        elif is_main():
            tmp = temp_dir_for(final)
            try:
                begin_dir(final)
                save_weights(model, tmp / rundir.WEIGHTS)
                torch.save(optimizer.state_dict(), rundir.optimizer_path(tmp))
                _write_common(tmp, state, rundir.rng_path(tmp))
            except BaseException:
                abort_dir(tmp)
                raise
            commit_dir(tmp, final)
    except OSError as e:  # a full disk, a read-only or vanished directory: the previous checkpoints stand
        raise CheckpointWriteError(_write_failure(run, final, model, optimizer, e)) from e
    if is_main():
        try:
            rundir.prune_checkpoints(run, keep)
        except OSError as e:  # the new checkpoint is whole: an old one left behind is no reason to stop
            print(f"warning: could not delete old checkpoints in {rundir.checkpoints_dir(run)} ({e}); "
                  "they stay until you remove them", flush=True)
    _barrier()  # nobody moves on (or reads the checkpoint) before the rename
    return final


class CheckpointWriteError(ValueError, OSError):
    """A checkpoint could not be written (a user-fixable condition: space, permissions)."""


class RankWriteFailed(OSError):
    """Rank `rank`'s part of a sharded checkpoint write failed; every rank raises this, with that
    rank's errno and message (`what`: what it was writing)."""

    def __init__(self, rank: int, what: str, errno: int | None, strerror: str, kind: str) -> None:
        super().__init__(errno, strerror)
        self.rank, self.what, self.kind = rank, what, kind


def checkpoint_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """About what one checkpoint takes on disk: the weights plus every optimizer state tensor."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    states = [v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
    return weights + sum(v.numel() * v.element_size() for v in states)


def _write_failure(run: Path, final: Path, model: nn.Module, optimizer, e: OSError) -> str:
    import errno
    import shutil

    need = checkpoint_bytes(model, optimizer)
    where = rundir.checkpoints_dir(run)
    try:
        free = f"{shutil.disk_usage(where if where.is_dir() else run).free / 1e6:,.1f} MB free there"
    except OSError:
        free = "free space unknown"
    previous = [p.name for p in rundir.list_checkpoints(run)]
    hint = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
            errno.EACCES: f"make {where} writable", errno.EPERM: f"make {where} writable",
            errno.EROFS: "use a writable filesystem"}.get(e.errno, "fix the cause")
    who = f"rank {e.rank} of {world()[2]} failed {e.what}: " if isinstance(e, RankWriteFailed) else ""
    kind = e.kind if isinstance(e, RankWriteFailed) else type(e).__name__
    return (f"could not write checkpoint {final.name} in {where}: {who}{e.strerror or e} ({kind}); "
            f"it needs about {need / 1e6:,.1f} MB, {free}. "
            f"{'The previous checkpoint ' + previous[-1] + ' is intact' if previous else 'No earlier checkpoint exists'}"
            f"; {hint}, then continue with --resume")


def _write_common(tmp: Path, state: dict, rng_file: Path) -> None:
    atomic_write_text(rng_file, json.dumps(rng_state()))
    if is_main():
        atomic_write_text(rundir.state_path(tmp), json.dumps(state, indent=2) + "\n")


def _save_sharded(final: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    tmp = temp_dir_for(final)  # the same path on every rank, made by rank 0
    rank, doing = world()[0], [""]

    def begin() -> None:
        doing[0] = f"creating {tmp}"
        if is_main():
            begin_dir(final)

    def write() -> None:
        doing[0] = f"writing its shard of {rundir.dcp_dir(tmp)}"
        model_sd, optim_sd = get_state_dict(model, optimizer)  # DTensor shards under FSDP
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=rundir.dcp_dir(tmp))  # collective
        doing[0] = "gathering the full weights"
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if is_main():  # the full tensors reach rank 0 only
            doing[0] = f"writing {tmp / rundir.WEIGHTS}"
            save_weights(model, tmp / rundir.WEIGHTS, full)
        doing[0] = f"writing {rundir.rng_path(tmp, rank)}" + (f" and {rundir.STATE}" if is_main() else "")
        _write_common(tmp, state, rundir.rng_path(tmp, rank))

    def commit() -> None:
        doing[0] = f"renaming {tmp} to {final.name}"
        if is_main():
            commit_dir(tmp, final)

    try:
        for part in (begin, write, commit):
            _all_or_none(part, doing)
    except BaseException:
        if is_main():
            abort_dir(tmp)
        raise


def _all_or_none(part, doing: list[str]) -> None:
    """Run this rank's `part` of a collective write, then exchange outcomes with every rank (one
    all-gather of a small tuple), so that all raise `RankWriteFailed` together if any rank's part
    failed. `doing[0]`: what the part was doing, for the message."""
    rank, outcome, bug = world()[0], None, None
    try:
        part()
    except (Exception, CheckpointException) as raised:  # DCP's CheckpointException is a BaseException
        e = raised
        if isinstance(e, CheckpointException) and e.failures:  # DCP already gathered: name its first failure
            rank, (e, _) = min(e.failures.items(), key=lambda kv: kv[0])
        if isinstance(e, OSError):
            outcome = (rank, doing[0], e.errno, e.strerror or str(e), type(e).__name__)
        else:  # not a disk condition: the others stop too, and this rank keeps the traceback
            outcome, bug = (rank, doing[0], None, f"{type(e).__name__}: {e}", type(e).__name__), raised
    outcomes = [None] * dist.get_world_size()
    dist.all_gather_object(outcomes, outcome)
    failed = [o for o in outcomes if o is not None]
    if bug is not None:
        raise bug
    if failed:
        raise RankWriteFailed(*min(failed, key=lambda o: o[0]))


# ------------------------------------------------------------------ load


def load(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore any checkpoint into `model` (plain, DDP's inner module, or FSDP-sharded) and, when
    resuming (`optimizer` given), the optimizer and RNG. Returns the loop state."""
    ckpt = Path(ckpt)
    state = rundir.read_state(ckpt)
    if rundir.dcp_dir(ckpt).is_dir():
        _load_sharded(ckpt, model, optimizer)
        return state
    load_weights(model, ckpt / rundir.WEIGHTS)
    if optimizer is not None:
        path = rundir.optimizer_path(ckpt)
        try:
            saved = torch.load(path, weights_only=True)
        except FileNotFoundError:
            raise ValueError(f"{path} is missing: {ckpt} is not a complete checkpoint; resume from an earlier "
                             "one or start over with --overwrite") from None
        except Exception as e:  # truncated or foreign: torch's unpickler says which
            raise ValueError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200]}); the "
                             "file is damaged; resume from an earlier checkpoint or start over with --overwrite") from e
        if len(saved.get("param_groups", [])) != len(optimizer.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(saved["param_groups"], optimizer.param_groups)):
            raise ValueError(f"{path} holds the optimizer of another model (different parameter groups): the "
                             "checkpoint was saved with a different config; resume the run it came from")
        if is_fsdp(model):
            set_optimizer_state_dict(model, optimizer, by_name(model, optimizer, saved),
                                     options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(saved)
        _load_rng(ckpt)
    return state


def _load_sharded(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """DCP reshards: each rank reads the pieces of the saved shards that overlap what it holds now."""
    no_dist = not dist.is_initialized()
    if optimizer is None:
        model_sd = get_model_state_dict(model)
        dcp.load({"model": model_sd}, checkpoint_id=rundir.dcp_dir(ckpt), no_dist=no_dist)
        set_model_state_dict(model, model_sd)
        return
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.load({"model": model_sd, "optim": optim_sd}, checkpoint_id=rundir.dcp_dir(ckpt), no_dist=no_dist)
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
    _load_rng(ckpt)


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
