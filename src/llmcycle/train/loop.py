"""The training loop: one readable loop for 1 and N processes.

    for step in 0..total:  evaluate (every eval_every, and at the end) -> checkpoint -> [stop] ->
                           set lr -> accumulate gradients over micro-batches -> clip -> step -> log

The global batch (sequences per optimizer step) is fixed by the config whatever the world size:
each rank takes a disjoint slice of the same window ids and accumulates over micro-batches, so
1 process x k micro-steps and k processes x 1 micro-step see the same data. Batches are a pure
function of (seed, step), which is what makes `resume=True` continue bit for bit.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from llmcycle.config import RunConfig
from llmcycle.data.objectives import objective_for, raw_length
from llmcycle.data.loader import TokenWindows, eval_ids, global_batch_ids, rank_share
from llmcycle.data.mixture import open_windows, source_windows
from llmcycle.data.prepare import load_meta
from llmcycle.models import build_model
from llmcycle.models.accounting import flops_per_token
from llmcycle import checkpoint
from llmcycle.rundir import data_dir, save_config, latest_checkpoint, metrics_path, remove_partial_checkpoints, weights_path
from llmcycle.runtime import (autocast, destroy_distributed, init_distributed, is_main, matmul_peak_flops,
                              pick_device, print0, seed_everything, world)
from llmcycle.train.optim import build_optimizer, lr_at, set_lr
from llmcycle.train.parallel import no_sync, wrap_model

TIMING_STEPS = 5  # steps timed before a wall-clock budget is turned into a fixed step count


class NonFiniteLoss(RuntimeError):
    pass


def _all_mean(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= dist.get_world_size()
    return x


class Metrics:
    """Append-only metrics.jsonl (rank 0 only), flushed every line so a killed run keeps its log."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.f = open(path, "a", encoding="utf-8") if enabled else None

    def log(self, **row) -> None:
        if self.f:
            self.f.write(json.dumps(row) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f:
            self.f.close()


@torch.no_grad()
def evaluate(model, windows: TokenWindows, batches: list, device, dtype: str, bytes_per_token: float,
             objective=None, seed: int = 0) -> dict:
    """Mean validation loss over a fixed sample of windows, and bits per byte (tokenizer-invariant;
    meaningful for the causal objective, where every token is predicted)."""
    objective = objective or objective_for("decoder")
    generator = torch.Generator().manual_seed(seed)  # the same corruption at every evaluation
    model.eval()
    rank, _, ws = world()
    total = torch.zeros(2, device=device)  # (sum of losses, count)
    for ids in batches:
        batch = windows.get(rank_share(ids, rank, ws) if len(ids) % ws == 0 else ids).to(device)
        with autocast(device, dtype):
            _, loss = model(**objective(batch, generator))
        total += torch.stack([loss.float(), torch.ones((), device=device)])
    model.train()
    if dist.is_initialized():
        dist.all_reduce(total)
    loss = (total[0] / total[1]).item()
    return {"val_loss": loss, "val_bpb": loss / math.log(2) / bytes_per_token}


def _budget_steps(cfg: RunConfig, tokens_per_step: int) -> int | None:
    t = cfg.train
    candidates = []
    if t.max_steps is not None:
        candidates.append(t.max_steps)
    if t.max_tokens is not None:
        candidates.append(max(1, t.max_tokens // tokens_per_step))
    return min(candidates) if candidates else None


def _steps_for_time(cfg: RunConfig, state: dict, step_time: float, eval_time: float) -> int:
    """Turn the wall-clock budget into a step count once a few steps have been timed."""
    t = cfg.train
    per_step = step_time + eval_time / t.eval_every
    left = max(0.0, t.max_time - state["elapsed"])
    total = state["step"] + int(left / per_step)
    fixed = _budget_steps(cfg, state["tokens_per_step"])
    total = min(total, fixed) if fixed is not None else total
    if dist.is_initialized():  # every rank must agree on the schedule
        tt = torch.tensor([total], dtype=torch.long)
        dist.broadcast(tt, src=0)
        total = int(tt.item())
    return max(total, state["step"] + 1)


def train(run: Path, cfg: RunConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train the model described by `cfg` on the shards in RUN/data. Returns the final loop state."""
    run, t = Path(run), cfg.train
    device = pick_device(t.device)
    owned = not dist.is_initialized()  # a caller's process group is left to the caller
    init_distributed(device, None if t.backend == "auto" else t.backend, t.dist_timeout, alone=t.strategy != "single")
    rank, _, world_size = world()
    try:
        return _train(run, cfg, t, device, rank, world_size, resume, progress)
    finally:
        if owned:
            destroy_distributed()


def _train(run, cfg, t, device, rank, world_size, resume, progress):
    if t.threads:
        torch.set_num_threads(t.threads)
    meta = load_meta(data_dir(run))
    if meta["vocab_size"] > cfg.model.vocab_size:
        raise ValueError(f"the tokenizer has {meta['vocab_size']} tokens but the model only {cfg.model.vocab_size}; "
                         f"set --vocab-size >= {meta['vocab_size']}")
    micro = t.micro_batch_size or t.batch_size // world_size
    if t.batch_size % (world_size * micro):
        raise ValueError(f"batch_size={t.batch_size} must be a multiple of world_size x micro_batch_size "
                         f"= {world_size} x {micro}; change --batch-size or --micro-batch-size")
    accum = t.batch_size // (world_size * micro)

    seed_everything(t.seed)
    model = build_model(cfg.model).to(device)
    if not resume and is_main():  # the config on disk is the one trained, once it is known to be valid
        save_config(run, cfg)
    # wrap before building the optimizer: FSDP replaces the parameters with sharded ones
    wrapped = wrap_model(model, t.strategy, device, t.fsdp_shard, t.dtype)
    optimizer = build_optimizer(model, t)
    state = {"step": 0, "tokens": 0, "elapsed": 0.0, "total_steps": None, "tokens_per_step": t.batch_size * t.seq_len}
    removed = remove_partial_checkpoints(run) if is_main() else []
    if removed:
        print0(f"removed incomplete checkpoint(s) from a killed run: {', '.join(removed)}")
    if resume:
        ckpt = latest_checkpoint(run)
        if ckpt is None:
            raise ValueError(f"--resume: no complete checkpoint in {run}/checkpoints; start without --resume")
        state = checkpoint.load(ckpt, model, optimizer)  # any format, saved by any number of ranks
        print0(f"resumed from {ckpt.name} (step {state['step']}, {state['tokens']:,} tokens)")
        fixed = _budget_steps(cfg, state["tokens_per_step"])
        if t.max_time is None and fixed != state["total_steps"]:
            print0(f"budget changed: {state['total_steps']} -> {fixed} steps (the schedule stretches to match)")
            state["total_steps"] = fixed
    elif t.init_from:
        checkpoint.load_weights(model, weights_path(Path(t.init_from)))
        print0(f"initialised weights from {t.init_from} (fresh optimizer and schedule)")

    objective = objective_for(cfg.model.family, {**meta["tokenizer"], "vocab_size": meta["vocab_size"]}, cfg.model)
    window = raw_length(objective, t.seq_len) - 1  # TokenWindows(.., n) cuts n + 1 tokens; the decoder's n is seq_len
    train_w = open_windows(data_dir(run), "train", window)  # a --mix mixture: weighted over its sources
    val_w = open_windows(data_dir(run), "val", window)
    val_batches = eval_ids(len(val_w), t.eval_batches, min(t.batch_size, len(val_w)), t.seed)
    val_parts = {name: (w, eval_ids(len(w), t.eval_batches, min(t.batch_size, len(w)), t.seed))
                 for name, w in source_windows(data_dir(run), "val", window).items()}  # per-source validation
    bytes_per_token = meta["splits"]["val"]["text_bytes"] / meta["splits"]["val"]["tokens"]
    flops_tok = flops_per_token(cfg.model, t.seq_len, model)
    peak = matmul_peak_flops(device)
    if state["total_steps"] is None:  # a fresh run: the step/token budget now, the time budget after timing
        state["total_steps"] = _budget_steps(cfg, state["tokens_per_step"])
        state["timed"] = t.max_time is None
    metrics = Metrics(metrics_path(run), is_main())
    bar = tqdm(total=state["total_steps"], initial=state["step"], disable=not (progress and is_main()),
               unit="step", dynamic_ncols=True)
    step_times, eval_time, last_val = [], 0.0, None
    resumed_at = state["step"] if resume else None
    try:
        while True:
            step, total = state["step"], state["total_steps"]
            last = total is not None and step >= total
            if step % t.eval_every == 0 or last:
                t0 = time.perf_counter()
                last_val = evaluate(model, val_w, val_batches, device, t.dtype, bytes_per_token, objective, t.seed)
                for name, (w, ids) in val_parts.items():
                    last_val[f"val_loss/{name}"] = evaluate(model, w, ids, device, t.dtype, bytes_per_token,
                                                            objective, t.seed)["val_loss"]
                eval_time = time.perf_counter() - t0
                metrics.log(step=step, tokens=state["tokens"], **last_val)
                if is_main() and progress:
                    bar.write(f"step {step}: val loss {last_val['val_loss']:.4f}, {last_val['val_bpb']:.3f} bits/byte")
                state["val"] = last_val
            if (last or (step % t.ckpt_every == 0 and step > 0)) and step != resumed_at:
                checkpoint.save(run, step, model, optimizer, state, t.keep_checkpoints, sharded=t.strategy != "single")
            if last:
                break
            t0 = time.perf_counter()
            set_lr(optimizer, lr := lr_at(step, total or 10**9, t))
            loss = _train_step(wrapped, optimizer, train_w, objective, step, micro, accum, t, device, rank, world_size)
            if not math.isfinite(loss):
                ckpt = latest_checkpoint(run)
                raise NonFiniteLoss(
                    f"loss became {loss} at step {step} (lr {lr:.3g}); training stopped. The last good checkpoint "
                    f"is {ckpt or 'none (none was saved yet)'}. Lower --lr, raise --warmup-steps or use --grad-clip."
                )
            dt = time.perf_counter() - t0
            state["step"] += 1
            state["tokens"] += state["tokens_per_step"]
            state["elapsed"] += dt
            step_times.append(dt)
            if not state.get("timed", True) and len(step_times) == TIMING_STEPS + 1:
                state["total_steps"] = _steps_for_time(cfg, state, sum(step_times[1:]) / TIMING_STEPS, eval_time)
                state["timed"] = True
                bar.total = state["total_steps"]
            tok_s = state["tokens_per_step"] / dt
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:,.0f}", mfu=f"{flops_tok * tok_s / peak:.1%}", refresh=False)
            if step % t.log_every == 0:
                metrics.log(step=step, loss=loss, lr=lr, tokens=state["tokens"], tok_per_s=tok_s,
                            mfu=flops_tok * tok_s / peak, elapsed=state["elapsed"])
    finally:
        bar.close()
        metrics.close()
    state["flops_per_token"] = flops_tok
    return state


def _train_step(wrapped, optimizer, windows, objective, step, micro, accum, t, device, rank, world_size) -> float:
    """One optimizer step over this rank's share of the global batch. Returns the global mean loss."""
    ids = rank_share(global_batch_ids(step, t.batch_size, len(windows), t.seed), rank, world_size)
    generator = torch.Generator().manual_seed(hash((t.seed, step, rank)) % 2**63)  # objective randomness
    total = torch.zeros((), device=device)
    for i in range(accum):
        batch = windows.get(ids[i * micro:(i + 1) * micro]).to(device)  # (micro, T+1)
        with no_sync(wrapped, sync=i == accum - 1), autocast(device, t.dtype):
            _, loss = wrapped(**objective(batch, generator))
            (loss / accum).backward()
        total += loss.detach() / accum
    loss = _all_mean(total).item()
    if not math.isfinite(loss):  # never step on a non-finite loss: the weights stay as they were
        optimizer.zero_grad(set_to_none=True)
        return loss
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(wrapped.parameters(), t.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss
