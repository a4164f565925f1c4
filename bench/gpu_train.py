"""Single-GPU training throughput: tokens/s and MFU with bf16 autocast, through `llmcycle train`.

Trains llmcycle's decoder (GPT-2 small shape by default: 12 layers, d_model 768, 12 heads,
vocab 50,304, 1,024 tokens of context) for `--steps` optimizer steps and reports the median over
the steps after `--warmup`:

    tokens/s = batch x seq_len / step time
    MFU      = flops_per_token x tokens/s / peak      (flops_per_token = 6 N + 12 L H D T, models/accounting.py)

`--engine product` (default): the product itself, as a user runs it: `llmcycle prepare
--tokenizer byte` on the default corpus, then `python -m llmcycle train --device cuda --dtype
bfloat16 ...` in a subprocess (its run directory, data loader, loop, clipping, fused AdamW,
metrics); step times are read back from the run's metrics. `--engine hand`: a hand-written
loop over the same model and optimizer on random tokens: a lower bound on the step time (no data
loader, no loop bookkeeping), labelled as such.

The peak is the datasheet's dense bf16 tensor-core figure from the planner's GPU catalogue
(`llmcycle.plan.hardware`), looked up by GPU name; pass `--peak-tflops` for a GPU it lacks. Without CUDA the script says so and exits 0
(`--device cpu --preset tiny` runs a tiny configuration, only to check the script itself).

    .venv/bin/python bench/gpu_train.py [--preset gpt2|gpt2-medium] [--batch 16] [--compile] [--engine hand]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from llmcycle import rundir
from llmcycle.config import ModelConfig, TrainConfig
from llmcycle.models import build_model
from llmcycle.models.accounting import flops_per_token
from llmcycle.plan.hardware import gpu_for_device
from llmcycle.runtime import autocast
from llmcycle.train.optim import build_optimizer

PRESETS = {
    "gpt2": dict(n_layer=12, d_model=768, n_head=12),
    "gpt2-medium": dict(n_layer=24, d_model=1024, n_head=16),
    "tiny": dict(n_layer=2, d_model=64, n_head=4),  # --device cpu smoke test
}


def peak_flops(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    gpu = gpu_for_device(name)
    return gpu.peak_flops("bf16") if gpu and gpu.bf16_tflops else None


def build(args, device: torch.device):
    vocab = 50304 if args.preset != "tiny" else 512  # 50,257 padded to a multiple of 64
    cfg = ModelConfig(vocab_size=vocab, max_seq_len=args.seq_len, **PRESETS[args.preset])
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    optimizer = build_optimizer(model, TrainConfig(max_steps=1, lr=3e-4))
    return cfg, model, optimizer


def train_steps(model, optimizer, args, device, vocab: int) -> list[float]:
    """Seconds per optimizer step (forward + backward over the batch, clip, AdamW)."""
    step_model = torch.compile(model) if args.compile else model
    times = []
    for _ in range(args.steps):
        x = torch.randint(0, vocab, (args.batch, args.seq_len + 1), device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast(device, "bfloat16"):
            _, loss = step_model(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def product_steps(args, cfg: ModelConfig) -> list[float]:
    """Seconds per optimizer step of `llmcycle train` (subprocess), from the run's metrics."""
    with tempfile.TemporaryDirectory(prefix="llmcycle-gpu-bench-") as tmp:
        run = Path(tmp) / "run"
        tokens = 2 * args.steps * args.batch * (args.seq_len + 1)  # enough windows for every step
        for cmd in (["prepare", "--run", str(run), "--tokenizer", "byte", "--max-bytes", str(max(tokens, 10**6)),
                     "--quiet"],
                    ["train", "--run", str(run), "--quiet", "--device", args.device,
                     "--dtype", "bfloat16" if args.device == "cuda" else "float32",
                     "--vocab-size", str(cfg.vocab_size), "--n-layer", str(cfg.n_layer), "--d-model", str(cfg.d_model),
                     "--n-head", str(cfg.n_head), "--max-seq-len", str(args.seq_len), "--seq-len", str(args.seq_len),
                     "--batch-size", str(args.batch), "--max-steps", str(args.steps), "--lr", "3e-4",
                     "--log-every", "1", "--eval-every", str(10**9), "--eval-batches", "1", "--ckpt-every", str(10**9),
                     *(["--compile"] if args.compile else [])]):
            out = subprocess.run([sys.executable, "-m", "llmcycle", *cmd], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"llmcycle {cmd[0]} failed:\n{out.stderr[-3000:]}")
        rows = [r for r in rundir.read_metrics(run) if "tok_per_s" in r]
        return [args.batch * args.seq_len / r["tok_per_s"] for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="gpt2", help="model shape (default gpt2)")
    ap.add_argument("--batch", type=int, default=16, help="sequences per step (default 16)")
    ap.add_argument("--seq-len", type=int, default=1024, help="tokens per sequence (default 1024)")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps (default 30)")
    ap.add_argument("--warmup", type=int, default=10, help="first steps left out of the median (default 10)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (train --compile)")
    ap.add_argument("--engine", choices=("product", "hand"), default="product",
                    help="product: `llmcycle train` (default); hand: a bare loop on random tokens, a lower bound")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak if the GPU is not in the table")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke test of the script)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu_train.py: no CUDA GPU is visible here (torch "
              f"{torch.__version__}); run it on a GPU machine. Nothing measured.")
        return 0
    if args.warmup >= args.steps:
        raise SystemExit(f"--warmup {args.warmup} must be below --steps {args.steps}")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    cfg, model, optimizer = build(args, device)
    n_params = sum(p.numel() for p in model.parameters())
    fpt = flops_per_token(cfg, args.seq_len, model)
    if args.engine == "product":
        del model, optimizer  # the subprocess builds its own
        if device.type == "cuda":
            torch.cuda.empty_cache()
        times = product_steps(args, cfg)
    else:
        times = train_steps(model, optimizer, args, device, cfg.vocab_size)
    step = statistics.median(times[args.warmup:])
    tok_s = args.batch * args.seq_len / step
    peak = peak_flops(name, args.peak_tflops)
    mfu = f"{fpt * tok_s / peak:.1%} of {peak / 1e12:.0f} TFLOP/s" if peak else "unknown peak (use --peak-tflops)"
    mem = (f", peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
           if device.type == "cuda" and args.engine == "hand" else "")
    engine = "llmcycle train" if args.engine == "product" else "hand loop on random tokens (lower bound)"
    print(f"{name}, torch {torch.__version__}: {args.preset} ({n_params / 1e6:.1f} M params, "
          f"{fpt / 1e9:.2f} GFLOP/token), "
          f"batch {args.batch} x {args.seq_len}, {'bf16 autocast' if device.type == 'cuda' else 'fp32'}"
          f"{', compiled' if args.compile else ''}; {engine}")
    print(f"  {tok_s:,.0f} tokens/s  ({step * 1e3:.1f} ms/step, median of {len(times) - args.warmup})  MFU {mfu}{mem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
