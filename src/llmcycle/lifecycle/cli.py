"""`llmcycle run`: the whole lifecycle on the default corpus (prepare, train, evaluate, prompt, report)."""

from __future__ import annotations

import argparse

from llmcycle.config import FAMILIES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/default", help="run directory (default: runs/default)")
    p.add_argument("--budget", type=float, default=180.0, help="training budget in seconds (default: 180)")
    p.add_argument("--corpus", default="default", help="text file, folder, .jsonl, or 'default' = Python stdlib source")
    p.add_argument("--max-bytes", type=int, default=None, help="read at most this many bytes of the corpus (default: all)")
    p.add_argument("--family", choices=FAMILIES, default="decoder",
                   help="decoder (causal LM), encoder (masked LM) or seq2seq (span corruption) (default: decoder)")
    p.add_argument("--size", choices=["compute-optimal", "fixed"], default="compute-optimal",
                   help="decoder size: compute-optimal for the budget at this machine's measured FLOP/s (the lab fit "
                        "of --scale-fit, else Chinchilla's), or the fixed 4 x 128 model (default: compute-optimal)")
    p.add_argument("--scale-fit", default=None, help="fit.json (or its folder) from `llmcycle scale fit` on this corpus")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from llmcycle.lifecycle.pipeline import run_lifecycle  # torch only when the lifecycle runs

    run_lifecycle(args)
    return 0
