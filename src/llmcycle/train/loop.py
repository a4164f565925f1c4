"""The training loop: one readable loop for 1 and N processes, for pretraining and fine-tuning.

    for step in 0..total:  evaluate (every eval_every, and at the end) -> checkpoint -> [stop] ->
                           set lr -> accumulate gradients over micro-batches -> clip -> step -> log

The global batch (sequences per optimizer step) is fixed by the config whatever the world size:
each rank takes a disjoint slice of the same window ids and accumulates over micro-batches, so
1 process x k micro-steps and k processes x 1 micro-step see the same data. Batches are a pure
function of (seed, step), which is what makes `resume=True` continue bit for bit. What is trained
on comes from a `Batches` (`train/batches.py`): token windows for pretraining by default.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from llmcycle import checkpoint, rundir
from llmcycle.config import RunConfig
from llmcycle.models import build_model
from llmcycle.models.accounting import flops_per_token
from llmcycle.runtime import (autocast, destroy_distributed, init_distributed, is_main, matmul_peak_flops,
                              pick_device, print0, seed_everything, world)
from llmcycle.train.allocator import keep_freed_memory
from llmcycle.train.batches import Batches, PretrainBatches
from llmcycle.train.compile import compile_for_training
from llmcycle.train.optim import build_optimizer, lr_at, set_lr
from llmcycle.train.parallel import no_sync, wrap_model
from llmcycle.train.state import Budget, LoopState


class NonFiniteLoss(RuntimeError):
    pass


def train(run: Path, cfg: RunConfig, resume: bool = False, progress: bool = True, overwrite: bool = False,
          batches=PretrainBatches, model: torch.nn.Module | None = None) -> LoopState:
    """Train the model described by `cfg` in run directory `run` and save `cfg` as its config.json.
    `batches(run, cfg)` makes the `Batches` to train on; `model` replaces `build_model(cfg.model)`
    (e.g. a model wrapped with adapters). Returns the final loop state."""
    run, t = Path(run), cfg.train
    device = pick_device(t.device)
    owned = not dist.is_initialized()  # a caller's process group is left to the caller
    init_distributed(device, None if t.backend == "auto" else t.backend, t.dist_timeout, alone=t.strategy != "single")
    try:
        with rundir.writer_lock(run, "train") if is_main() else contextlib.nullcontext():
            return _train(run, cfg, device, resume, progress, overwrite, batches, model)
    finally:
        if owned:
            destroy_distributed()


def _train(run, cfg, device, resume, progress, overwrite, make_batches, model) -> LoopState:
    t, (rank, _, world_size) = cfg.train, world()
    if t.threads:
        torch.set_num_threads(t.threads)
    micro, accum = _micro_batching(t, world_size)
    data: Batches = make_batches(run, cfg)
    seed_everything(t.seed)
    model = (model or build_model(cfg.model)).to(device)
    wrapped = wrap_model(model, t.strategy, device, t.fsdp_shard, t.dtype)  # before the optimizer: FSDP
    optimizer = build_optimizer(model, t)  # replaces the parameters with sharded ones
    forward = compile_for_training(wrapped) if t.compile else wrapped  # what the training step calls
    state = _start(run, cfg, model, optimizer, resume, overwrite, data.tokens_per_step)
    budget = Budget(t, state, resumed=resume)
    flops_tok = flops_per_token(cfg.model, t.seq_len, model)
    log = _Log(run, state, progress, t.log_every, flops_tok, matmul_peak_flops(device))
    val_sets = data.validation(rank, world_size)
    resumed_at = state.step if resume else None
    with log, keep_freed_memory(device.type == "cpu"):  # no page faults per step for big tensors
        while True:
            step, last = state.step, budget.done()
            if step % t.eval_every == 0 or last:
                t0 = time.perf_counter()
                state.val = evaluate(model, val_sets, device, t.dtype, data.bytes_per_token)
                budget.eval_time = time.perf_counter() - t0
                log.evaluation(step, state)
            if (last or (step % t.ckpt_every == 0 and step > 0)) and step != resumed_at:
                checkpoint.save(run, step, model, optimizer, state.to_dict(), t.keep_checkpoints,
                                sharded=t.strategy != "single")
            if last:
                break
            set_lr(optimizer, lr := lr_at(step, state.total_steps or 10**9, t))
            t0 = time.perf_counter()
            loss = _train_step(wrapped, optimizer, data, step, micro, accum, t, device, rank, world_size, forward)
            _check_finite(loss, step, lr, run)
            dt = time.perf_counter() - t0
            state.step, state.tokens, state.elapsed = step + 1, state.tokens + state.tokens_per_step, state.elapsed + dt
            if budget.after_step(dt):
                log.bar.total = state.total_steps
            log.training(step, state, loss, lr, dt)
    state.flops_per_token = flops_tok
    print0(f"stopped at step {state.step} by {state.stopped_by} "
           f"({', '.join(f'{k}={v}' for k, v in state.budget.items() if v is not None)})")
    return state


def _micro_batching(t, world_size: int) -> tuple[int, int]:
    """(sequences per forward pass per rank, micro-steps per optimizer step)."""
    micro = t.micro_batch_size or t.batch_size // world_size
    if micro < 1 or t.batch_size % (world_size * micro):
        raise ValueError(f"batch_size={t.batch_size} must be a multiple of world_size x micro_batch_size "
                         f"= {world_size} x {micro}; change --batch-size or --micro-batch-size")
    return micro, t.batch_size // (world_size * micro)


def _start(run: Path, cfg: RunConfig, model, optimizer, resume: bool, overwrite: bool,
           tokens_per_step: int) -> LoopState:
    """The loop state to start from: a checkpoint's (--resume), or fresh (weights from --init-from)."""
    removed = rundir.remove_partial_checkpoints(run) if is_main() else []
    if removed:
        print0(f"removed incomplete checkpoint(s) from a killed run: {', '.join(removed)}")
    if resume:
        ckpts = rundir.list_checkpoints(run)[::-1]
        if not ckpts:
            raise ValueError(f"--resume: no complete checkpoint in {rundir.checkpoints_dir(run)}; "
                             "start without --resume")
        errors = []
        for ckpt in ckpts:  # the newest that loads; a damaged one is named and skipped
            try:
                state = LoopState.from_dict(checkpoint.load(ckpt, model, optimizer))  # any format, any world size
            except ValueError as e:
                errors.append(f"{ckpt.name}: {e}")
                print0(f"warning: {errors[-1]}" + ("; trying the one before" if ckpt != ckpts[-1] else ""))
                continue
            print0(f"resumed from {ckpt.name} (step {state.step}, {state.tokens:,} tokens)"
                   + (f", the newest whole one ({len(errors)} newer could not be loaded)" if errors else ""))
            return state
        raise ValueError(errors[0] if len(errors) == 1 else
                         f"--resume: none of the {len(errors)} checkpoints can be loaded; the newest, {errors[0]}")
    old = rundir.list_checkpoints(run)
    if old and not overwrite:
        raise ValueError(f"{run} already holds checkpoints ({', '.join(p.name for p in old)}) of an earlier run; "
                         "continue it with --resume, or start over with --overwrite (deletes them)")
    if cfg.train.init_from:
        checkpoint.load_weights(model, rundir.weights_path(Path(cfg.train.init_from)))
        print0(f"initialised weights from {cfg.train.init_from} (fresh optimizer and schedule)")
    if is_main():  # a fresh run: its own checkpoints, log and config.json (the config it trains)
        rundir.discard_training(run)  # the earlier ones go in one rename: a kill leaves them whole or gone
        rundir.save_config(run, cfg)
    if dist.is_initialized():
        dist.barrier()
    return LoopState(tokens_per_step=tokens_per_step)


def _check_finite(loss: float, step: int, lr: float, run: Path) -> None:
    if not math.isfinite(loss):
        ckpt = rundir.latest_checkpoint(run)
        raise NonFiniteLoss(
            f"loss became {loss} at step {step} (lr {lr:.3g}); training stopped. The last good checkpoint "
            f"is {ckpt or 'none (none was saved yet)'}. Lower --lr, raise --warmup-steps or use --grad-clip."
        )


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def validation_loss(model, batches: list[dict], device, dtype: str) -> float:
    """Mean loss over fixed batches (all ranks' shares averaged)."""
    model.eval()
    total = torch.zeros(2, device=device)  # (sum of losses, count)
    for batch in batches:
        with autocast(device, dtype):
            _, loss = model(**_to(batch, device))
        total += torch.stack([loss.float(), torch.ones((), device=device)])
    model.train()
    if dist.is_initialized():
        dist.all_reduce(total)
    return (total[0] / total[1]).item()


def evaluate(model, val_sets: dict[str, list[dict]], device, dtype: str, bytes_per_token: float | None) -> dict:
    """Validation loss of every set ("" is the whole validation split; others are a mixture's sources),
    and bits per byte (tokenizer-invariant; meaningful for the causal objective)."""
    out = {f"val_loss/{name}" if name else "val_loss": validation_loss(model, batches, device, dtype)
           for name, batches in val_sets.items()}
    out["val_bpb"] = out["val_loss"] / math.log(2) / bytes_per_token if bytes_per_token else None
    return out


def _train_step(wrapped, optimizer, data: Batches, step, micro, accum, t, device, rank, world_size,
                forward=None) -> float:
    """One optimizer step over this rank's share of the global batch. Returns the global mean loss."""
    total = torch.zeros((), device=device)
    for i, batch in enumerate(data.micro_batches(step, rank, world_size, micro, accum)):
        with no_sync(wrapped, sync=i == accum - 1), autocast(device, t.dtype):
            _, loss = (forward or wrapped)(**_to(batch, device))  # forward: the compiled one (--compile)
            (loss / accum).backward()
        total += loss.detach() / accum
    if dist.is_initialized():
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        total /= world_size
    loss = total.item()
    if not math.isfinite(loss):  # never step on a non-finite loss: the weights stay as they were
        optimizer.zero_grad(set_to_none=True)
        return loss
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(wrapped.parameters(), t.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


class _Log:
    """metrics.jsonl (rank 0, flushed every line so a killed run keeps its log) and the progress bar."""

    def __init__(self, run: Path, state: LoopState, progress: bool, every: int, flops_tok: float, peak: float) -> None:
        self.f = open(rundir.metrics_path(run), "a", encoding="utf-8") if is_main() else None
        self.bar = tqdm(total=state.total_steps, initial=state.step, disable=not (progress and is_main()),
                        unit="step", dynamic_ncols=True)
        self.progress, self.every, self.flops_tok, self.peak = progress, every, flops_tok, peak

    def __enter__(self) -> "_Log":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        if self.f:
            self.f.close()

    def _write(self, **row) -> None:
        if self.f:
            self.f.write(json.dumps(row) + "\n")
            self.f.flush()

    def evaluation(self, step: int, state: LoopState) -> None:
        self._write(step=step, tokens=state.tokens, **state.val)
        if is_main() and self.progress:
            bpb = state.val.get("val_bpb")
            self.bar.write(f"step {step}: val loss {state.val['val_loss']:.4f}"
                           + (f", {bpb:.3f} bits/byte" if bpb is not None else ""))

    def training(self, step: int, state: LoopState, loss: float, lr: float, dt: float) -> None:
        tok_s = state.tokens_per_step / dt
        mfu = self.flops_tok * tok_s / self.peak
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:,.0f}", mfu=f"{mfu:.1%}", refresh=False)
        if step % self.every == 0:
            self._write(step=step, loss=loss, lr=lr, tokens=state.tokens, tok_per_s=tok_s, mfu=mfu,
                        elapsed=state.elapsed)
