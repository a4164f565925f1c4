"""Data-parallel training on this machine's CPU: tokens/s for 1 and 2 processes, and the memory
each rank holds measured against the planner's ZeRO/FSDP formulas.

Throughput. Every configuration trains the same model on the same global batch (16 sequences x
128 tokens = 2,048 tokens per optimizer step) from the default corpus (byte tokenizer), launched
through torchrun's launcher API (`llmcycle.train.parallel.launch`, as `llmcycle train --nproc N`):

    single  1 process x 2 threads    micro-batch 8, 2 accumulation steps
    single  1 process x 1 thread     the same, half the cores: what one rank of the 2-process runs has
    ddp     2 processes x 1 thread   micro-batch 8 per rank, 1 step; gradients all-reduced (gloo)
    fsdp    2 processes x 1 thread   + parameters all-gathered per block, gradients reduce-scattered
    fsdp grad_op                     parameters gathered once per step (kept from forward to backward)

Both layouts use the 2 cores, so 2 processes cannot be faster than 1 with 2 threads: the ratio
shows what gloo communication and a second Python process cost. tokens/s is the median over the
timed steps (the first `--warmup` are skipped) of what the loop logs in metrics.jsonl; the
configurations run in turn `--repeats` times and the best median is kept, since anything else
running on the machine only slows a run down (the load average is printed with the figures).

Memory. Two ranks build the same model (fp32 weights, AdamW), take one step under ddp / fsdp
full / fsdp grad_op, and sum the bytes of the tensors they hold (a DTensor's local shard):
parameters at rest and between forward and backward, gradients, optimizer state. The planner's
`model_state_bytes` (ZeRO paper, Rajbhandari et al. 2020, Fig. 1) says what they should be.

    .venv/bin/python bench/train_parallel.py [--steps 40] [--warmup 8] [--repeats 2] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch

from llmcycle.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from llmcycle.train.launch import launch, train_worker
from llmcycle.train.parallel import model_state_bytes, wrap_model

MODEL = dict(n_layer=4, d_model=128, n_head=4, max_seq_len=128)
SEQ, BATCH, MICRO = 128, 16, 8
CONFIGS = (  # name, processes, threads per process, strategy, fsdp_shard
    ("single, 1 proc x 2 threads", 1, 2, "single", "full"),
    ("single, 1 proc x 1 thread", 1, 1, "single", "full"),
    ("ddp, 2 procs x 1 thread", 2, 1, "ddp", "full"),
    ("fsdp full, 2 procs x 1 thread", 2, 1, "fsdp", "full"),
    ("fsdp grad_op, 2 procs x 1 thread", 2, 1, "fsdp", "grad_op"),
)


def prepare_data(root: Path) -> dict:
    from llmcycle.data.prepare import prepare

    return prepare(DataConfig(tokenizer="byte", max_bytes=2_000_000), root / "data", progress=False)


def throughput(root: Path, vocab: int, steps: int, warmup: int, repeats: int) -> list[dict]:
    best: dict[str, float] = {}
    for rep in range(repeats):
        for config in CONFIGS:
            tok_s = run_config(root / f"rep{rep}", vocab, steps, warmup, *config)
            best[config[0]] = max(best.get(config[0], 0.0), tok_s)
            print(f"  {config[0]:36s} {tok_s:>9,.0f} tok/s  (repeat {rep + 1}, median of {steps - warmup} steps, "
                  f"load average {os.getloadavg()[0]:.1f})", flush=True)
    return [{"config": name, "tok_s": best[name]} for name, *_ in CONFIGS]


def run_config(root: Path, vocab: int, steps: int, warmup: int, name: str, nproc: int, threads: int, strategy: str,
               shard: str) -> float:
    """Train one configuration; the median tokens/s of its timed steps."""
    run = root / name.split(",")[0].replace(" ", "_") / f"{nproc}x{threads}"
    run.mkdir(parents=True)
    (run / "data").symlink_to(root.parent / "data")
    cfg = RunConfig(model=ModelConfig(vocab_size=vocab, **MODEL), data=DataConfig(tokenizer="byte"),
                    train=TrainConfig(seq_len=SEQ, batch_size=BATCH, micro_batch_size=MICRO, max_steps=steps,
                                      eval_every=10**6, eval_batches=1, ckpt_every=10**6, log_every=1,
                                      threads=threads, strategy=strategy, fsdp_shard=shard, keep_checkpoints=1))
    launch(nproc, train_worker, str(run), cfg.to_dict(), False, False)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tok_per_s"] for r in logged if "tok_per_s" in r and r["step"] >= warmup)


# ------------------------------------------------------------------ memory


def memory_worker(model_cfg: dict) -> dict:
    """On each rank: one step per strategy; bytes held at rest and between forward and backward."""
    import torch.distributed as dist

    from llmcycle.models import build_model
    from llmcycle.runtime import init_distributed

    torch.set_num_threads(1)
    init_distributed(torch.device("cpu"))
    out = {}
    try:
        for name, strategy, shard in (("ddp", "ddp", "full"), ("fsdp full", "fsdp", "full"),
                                      ("fsdp grad_op", "fsdp", "grad_op")):
            torch.manual_seed(0)
            model = build_model(ModelConfig(**model_cfg))
            n_params = sum(p.numel() for p in model.parameters())
            wrapped = wrap_model(model, strategy, torch.device("cpu"), shard)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            x = torch.randint(0, model_cfg["vocab_size"], (2, SEQ + 1))
            _, loss = wrapped(x[:, :-1], x[:, 1:])
            in_step = model_state_bytes(model)["params"]  # FSDP registers the gathered parameters while they are held
            loss.backward()
            optimizer.step()
            out[name] = {"n_params": n_params, "params_in_step": in_step, **model_state_bytes(model, optimizer)}
            dist.barrier()
        out["allreduce_s"] = allreduce_seconds(out["ddp"]["n_params"])
    finally:
        dist.destroy_process_group()
    return out


def allreduce_seconds(n: int, reps: int = 20) -> float:
    """Median seconds of one gloo all-reduce of n fp32 values: DDP's gradient exchange per step."""
    import time

    import torch.distributed as dist

    buf, times = torch.ones(n), []
    for _ in range(reps):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def planner(n_params: int, strategy: str, dp: int) -> tuple[dict, str]:
    """The planner's per-device model-state bytes; the ZeRO formulas inline if the planner is absent."""
    try:
        from llmcycle.plan.memory import model_state_bytes as plan

        return plan(n_params, dtype="fp32", optimizer="adamw", strategy=strategy, dp=dp), "llmcycle.plan.memory"
    except ImportError:
        stage = {"ddp": 0, "zero2": 2, "zero3": 3}[strategy]
        w, g, o = 4 * n_params, 4 * n_params, 8 * n_params  # fp32 weights, grads; AdamW's two moments
        out = {"weights": w / (dp if stage >= 3 else 1), "grads": g / (dp if stage >= 2 else 1),
               "optimizer": o / dp if stage else o}
        return {**out, "total": sum(out.values())}, "ZeRO paper formulas (planner not importable)"


def memory_table(vocab: int) -> str:
    model_cfg = dict(vocab_size=vocab, **MODEL)
    ranks = launch(2, memory_worker, model_cfg)
    lines = ["| strategy | planner | params at rest | params in step | grads | optimizer | measured total "
             "(in step) | planner: weights / grads / optimizer = total | measured / planner |",
             "|---|---|---|---|---|---|---|---|---|"]
    source = ""
    for name, strategy in (("ddp", "ddp"), ("fsdp full", "zero3"), ("fsdp grad_op", "zero2")):
        m = [ranks[r][name] for r in sorted(ranks)]
        plan, source = planner(m[0]["n_params"], strategy, len(m))
        mb = lambda key: " / ".join(f"{x[key] / 1e6:.3f}" for x in m)  # noqa: E731  one figure per rank
        total = [x["params_in_step"] + x["grads"] + x["optimizer"] for x in m]
        lines.append(f"| {name} | {strategy} | {mb('params')} | {mb('params_in_step')} | {mb('grads')} | "
                     f"{mb('optimizer')} | {' / '.join(f'{t / 1e6:.3f}' for t in total)} | "
                     f"{plan['weights'] / 1e6:.3f} / {plan['grads'] / 1e6:.3f} / {plan['optimizer'] / 1e6:.3f} = "
                     f"{plan['total'] / 1e6:.3f} | {max(total) / plan['total']:.3f} |")
    n = ranks[0]["ddp"]["n_params"]
    comm = max(ranks[r]["allreduce_s"] for r in ranks)
    return (f"Model: {n:,} parameters ({MODEL}, vocab {vocab}), fp32 + AdamW, 2 ranks; MB = 1e6 bytes, "
            f"one figure per rank; planner: {source}.\n\n" + "\n".join(lines) +
            f"\n\ngloo all-reduce of the {4 * n / 1e6:.2f} MB gradient between the 2 processes: "
            f"{comm * 1e3:.1f} ms (median of 20), DDP's communication per optimizer step.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per configuration (default 40)")
    ap.add_argument("--warmup", type=int, default=8, help="first steps left out of the median (default 8)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each configuration; the best is kept (default 2)")
    ap.add_argument("--skip-throughput", action="store_true", help="only the memory cross-check")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        meta = prepare_data(root)
        vocab = meta["vocab_size"]
        if not args.skip_throughput:
            print(f"tokens/s, global batch {BATCH} x {SEQ} = {BATCH * SEQ:,} tokens per step, "
                  f"model {MODEL}, torch {torch.__version__}, {torch.get_num_threads()} threads available:")
            rows = throughput(root, vocab, args.steps, args.warmup, args.repeats)
            base = rows[0]["tok_s"]
            print("\n| configuration | tokens/s | vs 1 process x 2 threads |\n|---|---|---|")
            for r in rows:
                print(f"| {r['config']} | {r['tok_s']:,.0f} | {r['tok_s'] / base:.2f} |")
        print("\nPer-rank model-state memory, measured vs planner:\n")
        print(memory_table(vocab))


if __name__ == "__main__":
    main()
