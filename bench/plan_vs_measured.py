"""Planner predictions vs measurements on llmcycle's own models (CPU fp32 by default).

    python bench/plan_vs_measured.py            # prints a markdown table (about a minute on 2 cores)
    python bench/plan_vs_measured.py --device cuda   # same protocol with torch.cuda.max_memory_allocated

Per case: (a) parameters, analytic vs the built model (exact); (b) training FLOPs per step,
compute.step_flops vs FlopCounterMode over forward + backward (target within 5%); (c) peak
training memory of a steady-state step, weights + grads + optimizer + fp32 activations
(memory.llmcycle_activation_bytes) vs the measured peak RSS over a fresh-process baseline
(method in llmcycle/plan/measure.py; target within 10%).
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
    args = ap.parse_args(argv)
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
