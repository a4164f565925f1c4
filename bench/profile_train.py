"""Where a step of `llmcycle train` goes: torch.profiler over the product's own `train()` on nanoGPT's CPU recipe.

    python bench/profile_train.py                       # same architecture as nanoGPT, fp32, 1 thread
    python bench/profile_train.py --threads 2 --steps 60 -- --dtype bfloat16   # flags after -- go to train

Prepares character-level Tiny Shakespeare with `llmcycle prepare --tokenizer char` (as
bench/train_shakespeare.py does), then runs `llmcycle.train.loop.train` in this process with the
`same` configuration of that benchmark (4 layers, width 128, context 64, batch 12, learned
positions, LayerNorm, GELU, tied head) and any extra train flags. The profiler skips the first
`--skip` steps and records the rest. Printed: the operators by self CPU time (share of the
profiled steps), the groups that matter for the training step (matmuls, attention, elementwise,
norms, optimizer, gradient clipping), and the per-step time read back from the run's metrics.
The profiler's own per-operator overhead inflates small operators; compare shares, not times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_shakespeare as ts  # noqa: E402  (the benchmark's recipe and data preparation)

GROUPS = {  # operator-name prefixes -> group (self CPU time)
    "matmuls": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention (SDPA)": ("aten::_scaled_dot_product", "aten::_flash_attention"),
    "GELU/SiLU": ("aten::gelu", "aten::silu"),
    "norms": ("aten::native_layer_norm", "aten::_fused_rms_norm", "aten::rms_norm", "aten::layer_norm"),
    "AdamW": ("aten::_fused_adamw", "aten::_foreach", "Optimizer."),
    "gradient clipping": ("aten::linalg_vector_norm", "aten::stack", "aten::clamp", "aten::mul_"),
    "loss": ("aten::_log_softmax", "aten::nll_loss", "aten::_log_softmax_backward", "aten::nll_loss_backward"),
}


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=40, help="training steps in all (default 40)")
    ap.add_argument("--skip", type=int, default=10, help="first steps left out of the profile (default 10)")
    ap.add_argument("--rows", type=int, default=20, help="operators printed (default 20)")
    args = ap.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    from llmcycle import rundir
    from llmcycle.train import loop
    from llmcycle.train.cli import add_arguments, config_from_args

    work = Path(tempfile.mkdtemp(prefix="llmcycle-profile-"))
    base = ts.prepare_llmcycle(work, ts.tiny_shakespeare())
    run = ts.new_run(work, base, "profile")
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--run", str(run), "--quiet", "--device", "cpu", "--threads", str(args.threads),
                                         *ts.SAME_ARCH, *ts.RECIPE, *extra, "--max-steps", str(args.steps),
                                         "--log-every", "1", "--eval-every", str(10**9), "--eval-batches", "1",
                                         "--ckpt-every", str(10**9)]))
    active = args.steps - args.skip - 1
    prof = profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=args.skip, warmup=1, active=active))
    step = loop._train_step

    def profiled_step(*a, **kw):  # the loop's own step, one profiler step each
        out = step(*a, **kw)
        prof.step()
        return out

    loop._train_step = profiled_step
    with prof:
        loop.train(run, cfg, progress=False)
    loop._train_step = step
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}; "
          f"{active} profiled steps of `same`{' ' + ' '.join(extra) if extra else ''}\n")
    print("| operator | self CPU share | calls per step |\n|---|---:|---:|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.rows]:
        print(f"| {e.key[:70]} | {e.self_cpu_time_total / total:.1%} | {e.count / active:.0f} |")
    print("\n| group | self CPU share |\n|---|---:|")
    grouped = 0.0
    for group, prefixes in GROUPS.items():
        share = sum(e.self_cpu_time_total for e in events if e.key.startswith(prefixes)) / total
        grouped += share
        print(f"| {group} | {share:.1%} |")
    print(f"| everything else (copies, views, adds, autograd and Python overhead) | {1 - grouped:.1%} |")
    rows = [r for r in rundir.read_metrics(run) if "tok_per_s" in r][args.skip:]
    per_step = [r["tokens"] / (r["step"] + 1) / r["tok_per_s"] * 1000 for r in rows]
    print(f"\nstep time under the profiler, median {statistics.median(per_step):.1f} ms (wall clock; without it see "
          "bench/train_shakespeare.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
