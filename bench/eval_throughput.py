"""Evaluation throughput: examples per second for every shipped task on a small llmcycle model,
one prompt at a time versus batched (left-padded generation, right-padded scoring).

    .venv/bin/python bench/eval_throughput.py [--limit 16] [--batch-sizes 1,8] [--shots 0] [--data-dir DIR]

The model is a randomly initialised decoder (byte tokenizer, 4 layers, d_model 128, context
2048), so the numbers measure the evaluation machinery, not answer quality; generation runs to
--max-new-tokens. Prints a markdown table and, per task, the batched/one-at-a-time ratio. Skips
a task whose data is missing.
"""

from __future__ import annotations

import argparse
import time

import torch

from llmcycle.config import ModelConfig
from llmcycle.data.tokenizer import byte_tokenizer
from llmcycle.evaluation.adapters import llmcycle_adapter
from llmcycle.evaluation.icl import EvalConfig, evaluate_task
from llmcycle.evaluation.tasks import load_task, task_names
from llmcycle.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--tasks", default=",".join(task_names()))
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    tok = byte_tokenizer()
    model = build_model(ModelConfig(vocab_size=tok.vocab_size, n_layer=4, d_model=128, n_head=4, max_seq_len=2048))
    adapter = llmcycle_adapter(model, tok, name="random-4x128")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {adapter.describe()} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params); {args.limit} examples, "
          f"{args.shots}-shot, generation {args.max_new_tokens} new tokens\n")
    print("| task | kind | prompt tokens | " + " | ".join(f"batch {b} ex/s" for b in sizes) + " | speed-up |")
    print("|---|---|---:|" + "---:|" * (len(sizes) + 1))
    for name in args.tasks.split(","):
        task = load_task(name)
        task.stop = []  # a random model rarely stops: every example generates max_new_tokens
        rates, tokens = [], 0.0
        for b in sizes:
            cfg = EvalConfig(shots=[args.shots], limit=args.limit, batch_size=b, max_new_tokens=args.max_new_tokens)
            try:
                t0 = time.perf_counter()
                res = evaluate_task(task, adapter, cfg, data_dir=args.data_dir)
                rates.append(args.limit / (time.perf_counter() - t0))
            except ValueError as e:
                print(f"| {name} | skipped: {e} |")
                break
            tokens = res["columns"][0]["prompt_tokens"]
        else:
            cells = " | ".join(f"{r:.2f}" for r in rates)
            print(f"| {name} | {task.kind} | {tokens:.0f} | {cells} | {rates[-1] / rates[0]:.2f}x |")


if __name__ == "__main__":
    main()
