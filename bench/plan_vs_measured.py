"""Planner predictions vs measurements on llmcycle's own models (CPU fp32 by default).

    python bench/plan_vs_measured.py            # prints a markdown table (about a minute on 2 cores)
    python bench/plan_vs_measured.py --device cuda   # same protocol with torch.cuda.max_memory_allocated
    python bench/plan_vs_measured.py --recompute     # activation checkpointing: memory and speed per mode

Per case: (a) parameters, analytic vs the built model (exact); (b) training FLOPs per step,
compute.step_flops vs FlopCounterMode over forward + backward (target within 5%); (c) peak
training memory of a steady-state step, weights + grads + optimizer + fp32 activations
(memory.llmcycle_activation_bytes) vs the measured peak RSS over a fresh-process baseline
(method in llmcycle/plan/measure.py; target within 10%).

--recompute: for RECOMPUTE_CASES, each `ModelConfig.recompute` mode (none | selective | full):
the measured peak against llmcycle's own prediction (`llmcycle_activation_bytes(..., recompute)`)
and against the generic planner's figure (what `llmcycle plan --dtype fp32 --zero 0 --batch B
--seq S --recompute MODE` prints: states + activations, which at fp32 are eager PyTorch's
accounting, `memory.activation_bytes(eager=True)`; 16-bit plans use Korthikanti's table), and the
speed cost: median CPU seconds of a training step (forward, backward, AdamW; process CPU time, so
other jobs on a shared machine do not count), the modes alternated in one process, 1 thread.
"""

from __future__ import annotations

import argparse
import sys

from llmcycle.plan.measure import Case, compare

BASE = dict(vocab_size=4096, d_model=256, n_head=4, n_layer=4, max_seq_len=512)
GPT2 = dict(mlp="gelu_tanh", pos_emb="learned", norm="layernorm", bias=True)
CASES = {
    "llama-like d256 L4, B8 T256, adamw": Case(BASE, 8, 256, "adamw"),
    "llama-like d256 L4, B8 T256, sgd": Case(BASE, 8, 256, "sgd"),
    "llama-like d256 L8, B16 T128, adamw": Case({**BASE, "n_layer": 8}, 16, 128, "adamw"),
    "gpt2-like d256 L4, B4 T256, adamw": Case({**BASE, **GPT2}, 4, 256, "adamw"),
    "GQA 6q/2kv d384 L4 V8192, B4 T256, adamw": Case({**BASE, "d_model": 384, "n_head": 6, "n_kv_head": 2, "vocab_size": 8192},
                                                       4, 256, "adamw"),
    "untied gelu d512 L2, B2 T512, sgd": Case({**BASE, "d_model": 512, "n_head": 8, "n_layer": 2, "mlp": "gelu",
                                               "tie_embeddings": False}, 2, 512, "sgd"),
    "encoder d256 L4, B8 T256, adamw": Case({**BASE, "family": "encoder"}, 8, 256, "adamw"),
    "LoRA r8 llama-like d256 L4, B8 T256": Case(BASE, 8, 256, "adamw", lora_rank=8),
    "LoRA r32 dropout 0.05 llama-like d256 L8, B16 T128": Case({**BASE, "n_layer": 8}, 16, 128, "adamw", lora_rank=32,
                                                              lora_dropout=0.05),
}


RECOMPUTE_CASES = {
    "llama-like d256 L4, B8 T256": Case(BASE, 8, 256, "adamw"),
    "gpt2-like d256 L4, B4 T256": Case({**BASE, **GPT2}, 4, 256, "adamw"),
}
MODES = ("none", "selective", "full")


def generic_plan_peak(case: Case) -> float:
    """`llmcycle plan`'s figure for this shape: fp32 states (plain DDP, one device) + activations."""
    from llmcycle.plan.memory import training_memory
    from llmcycle.plan.shape import from_config, param_groups

    sh = from_config(case.config())
    return training_memory(param_groups(sh)["total"], sh, dtype="fp32", optimizer=case.optimizer, strategy="ddp",
                           batch=case.batch, seq=case.seq_len, recompute=case.config().recompute)["total"]


def step_seconds(case: Case, steps: int = 12) -> dict:
    """Median training-step CPU time per recompute mode, modes alternated step by step."""
    import statistics
    import time

    import torch

    from llmcycle.plan.measure import _make, _step

    torch.set_num_threads(1)
    made = {m: _make(case, Case({**case.model, "recompute": m}, case.batch, case.seq_len).config()) for m in MODES}
    times = {m: [] for m in MODES}
    for i in range(steps + 1):
        for m in MODES:
            t0 = time.process_time()
            _step(*made[m])
            if i:  # the first step warms up
                times[m].append(time.process_time() - t0)
    return {m: statistics.median(t) for m, t in times.items()}


def recompute_table() -> float:
    print("| case | recompute | measured peak, MiB | llmcycle prediction | error | `llmcycle plan` (generic) | error |"
          " step CPU time, s (1 thread) | vs none |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for name, case in RECOMPUTE_CASES.items():
        speed = step_seconds(case)
        for m in MODES:
            c = Case({**case.model, "recompute": m}, case.batch, case.seq_len, case.optimizer)
            r = compare(c)
            generic = generic_plan_peak(c)
            meas = r["measured"]["peak"]
            worst = max(worst, abs(r["err_peak"]))
            print(f"| {name} | {m} | {mib(meas)} | {mib(r['predicted']['peak'])} | {r['err_peak']:+.1%} | "
                  f"{mib(generic)} | {generic / meas - 1:+.1%} | {speed[m]:.3f} | {speed[m] / speed['none']:.2f}x |",
                  flush=True)
    print(f"\nworst llmcycle-prediction error {worst:.1%} (target 10%); MiB = 2^20 bytes")
    return worst


def mib(b: float) -> str:
    return f"{b / 2**20:,.1f}"


def row(name: str, r: dict) -> str:
    p, m = r["predicted"], r["measured"]
    return (f"| {name} | {p['params']:,} | {'exact' if r['params_equal'] else m['params']} | {p['flops']:.4g} | {m['flops']:.4g} | "
            f"{r['err_flops']:+.1%} | {mib(p['weights'] + p['grads'] + p['optimizer'])} + {mib(p['activations'])} = "
            f"{mib(p['peak'])} | {mib(m['peak'])} | {r['err_peak']:+.1%} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--only", help="run the cases whose name contains this text")
    ap.add_argument("--recompute", action="store_true", help="the activation-checkpointing table instead")
    args = ap.parse_args(argv)
    if args.recompute:
        return 0 if recompute_table() < 0.10 else 1
    print("| case | params (predicted) | measured | FLOPs/step predicted | FlopCounterMode | error | "
          "peak predicted, MiB (states + activations) | peak measured, MiB | error |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for name, case in CASES.items():
        if args.only and args.only not in name:
            continue
        try:
            r = compare(case, args.device)
        except ValueError as e:  # e.g. a family that is not built yet
            print(f"| {name} | skipped: {e} |", file=sys.stderr)
            continue
        worst = max(worst, abs(r["err_peak"]))
        print(row(name, r), flush=True)
    print(f"\nworst peak-memory error {worst:.1%} (target 10%); MiB = 2^20 bytes")
    return 0 if worst < 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
