"""Benchmark: `llmcycle train` on nanoGPT's documented CPU recipe, against nanoGPT itself in the same run.

    python bench/train_shakespeare.py --nanogpt /path/to/nanoGPT     # ratios from this run
    python bench/train_shakespeare.py                                # llmcycle's absolute figures only
    python bench/train_shakespeare.py --nanogpt DIR --iters 0 --repeats 5 --speed-iters 300   # speed only

Both sides train on character-level Tiny Shakespeare (LLMCYCLE_SHARED/data/tinyshakespeare):
llmcycle's data is made by `llmcycle prepare --tokenizer char --val-fraction 0.1` (nanoGPT's 65
characters; held-out = 10% of the ~8 KB documents, chosen by hash), nanoGPT's by its own
data/shakespeare_char/prepare.py, fed the same local file instead of downloading it (held-out =
the last 10%). llmcycle is trained through the product: `python -m llmcycle train --run RUN ...`,
its run directory and data loader, exactly as a user runs it; the figures are read back from the
run's metrics. nanoGPT runs its own train.py with its documented CPU recipe (README):

    config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1
    --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
    --lr_decay_iters=2000 --dropout=0.0

Phases (each engine in a fresh subprocess; both get --threads intra-op threads, nanoGPT through
OMP_NUM_THREADS):
  speed    `--repeats` alternated runs of `--speed-iters` iterations per engine (order flips every
           repeat). ms/iteration = median of the run's per-step times (first 10 left out); printed
           per run, then min and median over repeats, and ratios of those. Evaluation is excluded.
  quality  one run of `--iters` iterations per engine: validation loss and the training time (sum
           of step times, evaluations excluded on both sides) at which validation first reached
           1.886 (llmcycle evaluates every `--eval-every` steps; nanoGPT every 250, its config).
  shape    nanoGPT's default Shakespeare shape (6 layers, width 384, 6 heads, context 256, batch
           64, dropout 0): `--shape-repeats` alternated runs of `--shape-iters` iterations per
           engine (nanoGPT; llmcycle fp32, fp32 --compile, bf16), first 2 left out (3 compiled):
           tokens/s, min and median over repeats.
llmcycle configurations (`--configs`): see CONFIGS. Without --nanogpt nothing is divided by
anything: ratios need both engines measured in this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmcycle import rundir
from llmcycle.config import RunConfig

SHARED = Path(os.environ.get("LLMCYCLE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TARGET = 1.886
WARMUP = 10  # first steps of a speed run left out of its median
CLOCK = "wall"  # --clock
NANO_RECIPE = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
               "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
               "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]
# nanoGPT's architecture and schedule in llmcycle's flags (nanoGPT: bias=False, tied head, exact GELU,
# learned positions, LayerNorm; AdamW betas (0.9, 0.99), decay 0.1 on matrices; clip 1.0)
SAME_ARCH = ["--n-layer", "4", "--n-head", "4", "--d-model", "128", "--max-seq-len", "64", "--pos-emb", "learned",
             "--norm", "layernorm", "--mlp", "gelu", "--no-bias", "--tie-embeddings", "--dropout", "0.0"]
RECIPE = ["--seq-len", "64", "--batch-size", "12", "--lr", "1e-3", "--min-lr-ratio", "0.1", "--warmup-steps", "100",
          "--beta1", "0.9", "--beta2", "0.99", "--weight-decay", "0.1", "--grad-clip", "1.0"]
CONFIGS = {
    # name: (description, flags, iterations of its quality run: None = --iters)
    "same": ("same architecture and schedule as nanoGPT, fp32", SAME_ARCH + RECIPE, None),
    "same-bf16": ("same, bf16 autocast (--dtype bfloat16)", SAME_ARCH + RECIPE + ["--dtype", "bfloat16"], None),
    "same-compile": ("same, torch.compile'd (--compile)", SAME_ARCH + RECIPE + ["--compile"], None),
    "same-bf16-compile": ("same, bf16 autocast and --compile",
                          SAME_ARCH + RECIPE + ["--dtype", "bfloat16", "--compile"], None),
    # the best configuration found: a Llama block (rotary, RMSNorm, SwiGLU at the same parameter count:
    # 3 x 128 x 340 ~ 2 x 4 x 128^2), lr 4e-3 over a 700-step schedule, compiled (the compilation in its
    # first step counts in its time to the target)
    "fast": ("Llama block (rope, RMSNorm, SwiGLU d_ff 340), lr 4e-3, 50 warmup, 700-step schedule, fp32, --compile",
             SAME_ARCH + RECIPE + ["--pos-emb", "rope", "--norm", "rmsnorm", "--mlp", "swiglu", "--d-ff", "340",
                                   "--lr", "4e-3", "--warmup-steps", "50", "--compile"], 700),
    "fast-bf16": ("the fast configuration with bf16 autocast instead of --compile",
                  SAME_ARCH + RECIPE + ["--pos-emb", "rope", "--norm", "rmsnorm", "--mlp", "swiglu", "--d-ff", "340",
                                        "--lr", "4e-3", "--warmup-steps", "50", "--dtype", "bfloat16"], 700),
}
SHAPE_NANO = ["--n_layer=6", "--n_head=6", "--n_embd=384", "--block_size=256", "--batch_size=64", "--dropout=0.0"]
SHAPE_LLM = ["--n-layer", "6", "--n-head", "6", "--d-model", "384", "--max-seq-len", "256", "--seq-len", "256",
             "--batch-size", "64", "--pos-emb", "learned", "--norm", "layernorm", "--mlp", "gelu", "--no-bias",
             "--tie-embeddings", "--dropout", "0.0", "--lr", "1e-3", "--beta2", "0.99", "--warmup-steps", "100"]


# ------------------------------------------------------------------ data


def tiny_shakespeare() -> Path:
    path = SHARED / "data" / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        sys.exit(f"{path} not found: this benchmark needs the shared data folder (set LLMCYCLE_SHARED)")
    return path


def prepare_llmcycle(work: Path, text: Path) -> Path:
    """A run directory prepared by the product: `llmcycle prepare --tokenizer char`."""
    base = work / "prepared"
    if not rundir.config_path(base).is_file():  # prepare writes the config last
        _check([sys.executable, "-m", "llmcycle", "prepare", "--run", str(base), "--source", str(text),
                "--tokenizer", "char", "--val-fraction", "0.1", "--quiet"])
    return base


def new_run(work: Path, base: Path, name: str) -> Path:
    """A fresh run directory holding a copy of the prepared data (each run writes its own metrics)."""
    run = work / name
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    shutil.copytree(rundir.data_dir(base), rundir.data_dir(run))
    cfg = RunConfig.load(rundir.config_path(base))  # prepare's config has a 180 s default budget: the
    cfg.train = dataclasses.replace(cfg.train, max_time=None, max_steps=1)  # bench's --max-steps alone counts
    cfg.save(rundir.config_path(run))
    return run


def prepare_nanogpt(nano: Path, text: Path) -> None:
    """nanoGPT's own data/shakespeare_char/prepare.py, on the local copy of the text it would download."""
    if not (nano / "train.py").is_file() or not (nano / "config" / "train_shakespeare_char.py").is_file():
        sys.exit(f"--nanogpt {nano}: not a nanoGPT checkout (train.py, config/train_shakespeare_char.py missing)")
    data = nano / "data" / "shakespeare_char"
    local = data / "input.txt"
    if local.is_file() and not filecmp.cmp(local, text, shallow=False):
        sys.exit(f"{local} differs from {text}; remove it so the benchmark can place the shared copy there")
    if not local.is_file():
        shutil.copy(text, local)
    if not (data / "train.bin").is_file() or (data / "train.bin").stat().st_mtime < local.stat().st_mtime:
        _check([sys.executable, "prepare.py"], cwd=data)


def _check(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out


# ------------------------------------------------------------------ engines


def run_llmcycle(work: Path, base: Path, name: str, flags: list[str], iters: int, threads: int,
                 eval_every: int, eval_batches: int) -> dict:
    """`llmcycle train` in a subprocess; per-step times and validation losses from the run's metrics."""
    run = new_run(work, base, name)
    cmd = [sys.executable, "-c", LLM_SHIM, CLOCK, "train", "--run", str(run), "--quiet", "--device", "cpu",
           "--threads", str(threads), *flags, "--max-steps", str(iters), "--log-every", "1",
           "--eval-every", str(eval_every), "--eval-batches", str(eval_batches), "--ckpt-every", str(10**9)]
    t0 = time.perf_counter()
    _check(cmd)
    wall = time.perf_counter() - t0
    rows = rundir.read_metrics(run)
    steps = {r["step"]: r for r in rows if "tok_per_s" in r}
    step_s = [r["tokens"] / (r["step"] + 1) / r["tok_per_s"] for r in (steps[s] for s in sorted(steps))]
    elapsed = {0: 0.0, **{s + 1: steps[s]["elapsed"] for s in steps}}  # training time after s + 1 steps
    evals = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    return {"step_s": step_s, "evals": evals, "elapsed": elapsed, "wall": wall,
            "train_s": elapsed[max(elapsed)] if elapsed else 0.0}


# `--clock cpu`: each engine's own step timer reads the process's CPU time instead of the wall
# clock (nanoGPT times iterations with time.time, llmcycle's loop with time.perf_counter), so a
# step's figure is the CPU seconds it cost, not how much of a shared machine it happened to get.
NANO_SHIM = ("import runpy, sys, time\nif sys.argv[1] == 'cpu': time.time = time.process_time\n"
             "sys.argv = ['train.py'] + sys.argv[2:]; sys.path.insert(0, '.')\nrunpy.run_path('train.py', run_name='__main__')")
LLM_SHIM = ("import sys, time\nif sys.argv[1] == 'cpu': time.perf_counter = time.process_time\n"
            "from llmcycle.cli import main\nsys.exit(main(sys.argv[2:]))")
ITER_RE = re.compile(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms")
EVAL_RE = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def run_nanogpt(nano: Path, work: Path, extra: list[str], threads: int, eval_interval: int = 250) -> dict:
    """nanoGPT's train.py in a subprocess; per-iteration times and validation losses from its log.
    An iteration that evaluated counts its median instead of its time (evaluation excluded)."""
    out_dir = Path(tempfile.mkdtemp(dir=work, prefix="nanogpt-out-"))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-c", NANO_SHIM, CLOCK, *NANO_RECIPE, *extra, f"--eval_interval={eval_interval}", f"--out_dir={out_dir}"]
    t0 = time.perf_counter()
    out = _check(cmd, cwd=nano, env=env)
    wall = time.perf_counter() - t0
    shutil.rmtree(out_dir, ignore_errors=True)
    times, evals = {}, []
    for line in out.stdout.splitlines():
        if m := ITER_RE.match(line):
            times[int(m[1])] = float(m[3]) / 1000
        elif m := EVAL_RE.match(line):
            evals.append((int(m[1]), float(m[3])))
    if not times:
        sys.exit(f"nanoGPT printed no 'iter N: ... time Xms' lines:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    clean = [t for i, t in times.items() if i % eval_interval]
    med = statistics.median(clean)
    step_s = [t if i % eval_interval else med for i, t in sorted(times.items())]
    step_s = step_s[1:]  # iteration 0 also timed the start-up before the loop
    elapsed = {i: sum(step_s[:i]) for i in range(len(step_s) + 1)}
    return {"step_s": step_s, "evals": evals, "elapsed": elapsed, "wall": wall, "train_s": sum(step_s)}


def first_at(r: dict, target: float) -> tuple[int, float] | None:
    """(step, training seconds) of the first evaluation at or below target."""
    for step, loss in r["evals"]:
        if loss <= target:
            return step, r["elapsed"][min(step, max(r["elapsed"]))]
    return None


def ms(xs: list[float], skip: int) -> float:
    return statistics.median(xs[skip:]) * 1000


def alternated(engines: list[str], repeats: int, run) -> dict[str, list[float]]:
    """ms/iteration of each engine over `repeats` runs, the order reversed every other repeat
    (so a drift in the machine's load falls on both sides); run(e) -> one run's ms/iteration."""
    per = {e: [] for e in engines}
    for rep in range(repeats):
        for e in (engines if rep % 2 == 0 else engines[::-1]):
            per[e].append(run(e))
            print(f"  repeat {rep + 1} {e:20s} {per[e][-1]:8.1f} ms/iter", flush=True)
    return per


def vs_nanogpt(per: dict[str, list[float]], e: str) -> str:
    """nanoGPT's time over e's (min, median): iterations/s relative to nanoGPT, from the same run."""
    if "nanoGPT" not in per or e == "nanoGPT":
        return ""
    n = per["nanoGPT"]
    return f"{min(n) / min(per[e]):.2f}x, {statistics.median(n) / statistics.median(per[e]):.2f}x"


# ------------------------------------------------------------------ phases


def speed(args, work, base, configs) -> None:
    print(f"\n## speed: {args.repeats} alternated runs of {args.speed_iters} iterations per engine "
          f"(ms/iteration = median of each run, first {WARMUP} left out)")
    engines = (["nanoGPT"] if args.nanogpt else []) + configs

    def run(e: str) -> float:
        if e == "nanoGPT":
            r = run_nanogpt(args.nanogpt, work, [f"--max_iters={args.speed_iters}", "--eval_iters=1"],
                            args.threads, eval_interval=10**9)
        else:
            r = run_llmcycle(work, base, f"speed-{e}", CONFIGS[e][1], args.speed_iters, args.threads, 10**9, 1)
        return ms(r["step_s"], WARMUP)

    per = alternated(engines, args.repeats, run)
    print("\n| engine | ms/iter min | median | iterations/s vs nanoGPT (min, median) |")
    print("|---|---:|---:|---:|")
    for e in engines:
        print(f"| {e} | {min(per[e]):.1f} | {statistics.median(per[e]):.1f} | {vs_nanogpt(per, e)} |")


def quality(args, work, base, configs) -> None:
    print(f"\n## quality: one run per engine; time to validation loss {TARGET} (training time, evaluations excluded)")
    results = {}
    engines = (["nanoGPT"] if args.nanogpt else []) + configs
    for e in engines:  # later flags win: a configuration's own --lr etc. override the recipe's
        if e == "nanoGPT":
            r = run_nanogpt(args.nanogpt, work, [], args.threads)
            iters = 2000
        else:
            iters = CONFIGS[e][2] or args.iters
            r = run_llmcycle(work, base, f"quality-{e}", CONFIGS[e][1], iters, args.threads, args.eval_every, 20)
        results[e] = r
        hit = first_at(r, TARGET)
        print(f"  {e:13s} {iters} iterations, {ms(r['step_s'], WARMUP):.1f} ms/iter median, training "
              f"{r['train_s']:.1f} s (process {r['wall']:.1f} s), final val loss {r['evals'][-1][1]:.4f}, "
              f"{TARGET} " + (f"at step {hit[0]}, {hit[1]:.1f} s" if hit else "not reached"), flush=True)
    if "nanoGPT" in results:
        n = results["nanoGPT"]["train_s"]
        for e in configs:
            hit = first_at(results[e], TARGET)
            if hit:
                print(f"  {e}: {TARGET} in {hit[1]:.1f} s = {hit[1] / n:.2f} of nanoGPT's {n:.1f} s training time "
                      f"(its 2,000 iterations, ending at {results['nanoGPT']['evals'][-1][1]:.4f})")


SHAPE_ENGINES = {"llmcycle": [], "llmcycle --compile": ["--compile"], "llmcycle bf16": ["--dtype", "bfloat16"]}


def shape(args, work) -> None:
    print(f"\n## nanoGPT's default Shakespeare shape (6 x 384, 6 heads, context 256, batch 64): "
          f"{args.shape_repeats} alternated run(s) of {args.shape_iters} iterations per engine, first 2 left out "
          f"(the compiled engine: first 3, its compilation)")
    base = prepare_llmcycle(work, tiny_shakespeare())
    tok = 64 * 256
    engines = (["nanoGPT"] if args.nanogpt else []) + list(SHAPE_ENGINES)

    def run(e: str) -> float:
        if e == "nanoGPT":
            r = run_nanogpt(args.nanogpt, work, [f"--max_iters={args.shape_iters}", "--eval_iters=1", *SHAPE_NANO],
                            args.threads, eval_interval=10**9)
        else:
            r = run_llmcycle(work, base, "shape", SHAPE_LLM + SHAPE_ENGINES[e], args.shape_iters, args.threads, 10**9, 1)
        return ms(r["step_s"], 3 if "compile" in e else 2)

    per = alternated(engines, args.shape_repeats, run)
    print("\n| engine | ms/iter min | median | tokens/s (best) | tokens/s vs nanoGPT (min, median) |")
    print("|---|---:|---:|---:|---:|")
    for e in engines:
        print(f"| {e} | {min(per[e]):.0f} | {statistics.median(per[e]):.0f} | {tok / min(per[e]) * 1000:,.0f} "
              f"| {vs_nanogpt(per, e)} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanogpt", type=Path, help="a karpathy/nanoGPT checkout: run it in this invocation for the ratios")
    ap.add_argument("--configs", default="same,fast", help=f"llmcycle configurations, of {', '.join(CONFIGS)}")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both engines (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="alternated speed runs per engine (default 3)")
    ap.add_argument("--speed-iters", type=int, default=200, help="iterations per speed run (0: no speed phase)")
    ap.add_argument("--iters", type=int, default=2000, help="iterations of the quality runs (0: no quality phase)")
    ap.add_argument("--quality-configs", help="configurations of the quality phase (default: --configs)")
    ap.add_argument("--eval-every", type=int, default=50, help="llmcycle's evaluations in the quality runs")
    ap.add_argument("--shape-iters", type=int, default=0, help="iterations at nanoGPT's default shape (0: skip)")
    ap.add_argument("--shape-repeats", type=int, default=1, help="alternated runs per engine at that shape (default 1)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="what a step's time is: wall clock, or the process's CPU time (a shared machine; use --threads 1)")
    ap.add_argument("--work", type=Path, default=None, help="folder for run directories (default: a temporary one)")
    args = ap.parse_args()
    global CLOCK
    CLOCK = args.clock
    configs = args.configs.split(",")
    unknown = [c for c in configs + (args.quality_configs or "").split(",") if c and c not in CONFIGS]
    if unknown:
        ap.error(f"unknown --configs {unknown}; choose from {', '.join(CONFIGS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="llmcycle-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    text = tiny_shakespeare()
    import torch

    print(f"torch {torch.__version__}, {args.threads} threads per engine, {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
          f"{args.clock} clock, load average {os.getloadavg()[0]:.1f} at the start; "
          f"llmcycle configurations: " + "; ".join(f"{c} = {CONFIGS[c][0]}" for c in configs))
    base = prepare_llmcycle(work, text)
    if args.nanogpt:
        args.nanogpt = args.nanogpt.resolve()
        prepare_nanogpt(args.nanogpt, text)
    else:
        print("no --nanogpt checkout: absolute llmcycle figures only, no ratios")
    if args.speed_iters:
        speed(args, work, base, configs)
    if args.iters:
        quality(args, work, base, args.quality_configs.split(",") if args.quality_configs else configs)
    if args.shape_iters:
        shape(args, work)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
