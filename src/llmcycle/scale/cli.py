"""`llmcycle scale sweep|fit`: the scaling-law lab on the command line (docs/scale.md).

    llmcycle scale sweep --out DIR --budgets 1e12,3e12,1e13 --sizes 5 [--corpus SRC] [--resume] [--print-commands]
    llmcycle scale fit DIR [--params total|non-embedding] [--bootstrap 200] [--complete-budgets-only]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _budgets(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a comma-separated list of FLOP counts (e.g. 1e12,3e12)") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="scale_command", required=True, metavar="{sweep,fit}")
    s = sub.add_parser("sweep", help="IsoFLOP sweep: for each budget, models around the optimum, each an ordinary run")
    s.add_argument("--out", required=True, help="sweep directory (made, or continued if it exists)")
    s.add_argument("--budgets", type=_budgets, default=[1e12, 3e12, 1e13, 3e13],
                   help="training compute budgets in FLOPs, comma-separated (default: 1e12,3e12,1e13,3e13)")
    s.add_argument("--sizes", type=int, default=5, help="models per budget (>= 3 for a parabola; default: 5)")
    s.add_argument("--family", choices=["decoder"], default="decoder",
                   help="model family (decoder only: the IsoFLOP loss must be a per-token LM loss)")
    s.add_argument("--corpus", default="default", help="text file, folder, .jsonl, or 'default' (Python stdlib source)")
    s.add_argument("--max-bytes", type=int, default=None, help="read at most this many bytes of the corpus")
    s.add_argument("--tokenizer", default="bpe", help="bpe | byte | PATH of a tokenizer.json (default: bpe)")
    s.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary (default: 4096)")
    s.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (default: 256)")
    s.add_argument("--batch-size", type=int, default=8, help="sequences per step (default: 8)")
    s.add_argument("--lr", type=float, default=3e-3, help="peak learning rate, cosine to 10%% (default: 3e-3)")
    s.add_argument("--eval-batches", type=int, default=16, help="held-out batches every point is scored on (default: 16)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads per point (default: torch's)")
    s.add_argument("--law", default="chinchilla", help="planner law centring each spread (default: chinchilla)")
    s.add_argument("--width", type=float, default=16.0, help="largest/smallest params within a budget (default: 16)")
    s.add_argument("--resume", action="store_true", help="continue interrupted points from their checkpoints")
    s.add_argument("--print-commands", action="store_true",
                   help="prepare the data and point directories, print each point's `llmcycle train` (and torchrun) command, train nothing")
    s.add_argument("--nproc", type=int, default=8, help="processes in the printed torchrun commands (default: 8)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")

    f = sub.add_parser("fit", help="fit Approach 2 (IsoFLOP parabolas) and Approach 3 (L(N, D)) to a sweep")
    f.add_argument("dir", help="sweep directory made by `llmcycle scale sweep`")
    f.add_argument("--params", choices=["total", "non-embedding"], default="total",
                   help="parameter count N (default: total, Chinchilla's; see docs/scale.md)")
    f.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the intervals (default: 200)")
    f.add_argument("--out", default=None, help="folder for fit.json, fit.md and the PNGs (default: DIR/fit)")
    f.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    f.add_argument("--complete-budgets-only", action="store_true",
                   help="leave out budgets with fewer than 3 finished points (default: refuse, naming them)")
    f.add_argument("--refine", type=int, default=64, help="Approach 3: L-BFGS runs from the best-scoring grid starts (default: 64)")


def run(args) -> int:
    if args.scale_command == "sweep":
        return _sweep(args)
    return _fit(args)


def _sweep(args) -> int:
    from llmcycle.config import DataConfig
    from llmcycle.scale import sweep as sw

    if args.sizes < 3:
        raise ValueError(f"--sizes {args.sizes}: a parabola per budget needs at least 3 models")
    out = Path(args.out)
    data = DataConfig(source=args.corpus, max_bytes=args.max_bytes, tokenizer=args.tokenizer, vocab_size=args.vocab_size)
    settings = sw.Settings(seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr, eval_batches=args.eval_batches,
                           threads=args.threads, law=args.law, width=args.width)
    meta = sw.prepare_sweep(out, data, settings, progress=not args.quiet)
    points, notes = sw.plan_points(args.budgets, args.sizes, meta["vocab_size"], meta["splits"]["train"]["tokens"], settings)
    sw.write_sweep(out, data, meta, settings, points, notes)
    for n in notes:
        print(f"note: {n}")
    total = sum(p.tokens * p.flops_per_token for p in points)
    print(f"{len(points)} points over {len(args.budgets)} budgets, {total:.3g} training FLOPs in all; "
          f"{meta['splits']['train']['tokens']:,} unique train tokens, {meta['splits']['val']['tokens']:,} held out")
    if args.print_commands:
        from llmcycle.scale.shapes import ladder

        rungs = {r.k: r for r in ladder(meta["vocab_size"], settings.seq_len)}
        for p in points:
            if sw.point_status(sw.point_dir(out, p.name), p) == "new":
                sw.materialise(out, p, sw.point_config(p, settings, data, rungs))
        print("\n".join(sw.commands(out, points, args.nproc)))
        print(f"# then: llmcycle scale fit {out}   (add --resume to a train command to continue a killed point)")
        return 0
    rows = sw.run_sweep(out, points, settings, data, meta["vocab_size"], resume=args.resume, progress=not args.quiet)
    for r in rows:
        print(f"{r['name']}: {r['params']:>10,} params {r['tokens']:>11,} tokens  val loss {r.get('val_loss', float('nan')):.4f}")
    print(f"done: llmcycle scale fit {out}")
    return 0


def _fit(args) -> int:
    from llmcycle.scale.report import fit_sweep

    out = Path(args.out) if args.out else Path(args.dir) / "fit"
    result = fit_sweep(Path(args.dir), out, params=args.params, bootstrap=args.bootstrap, seed=args.seed,
                       complete_only=args.complete_budgets_only, refine=args.refine)
    print(result["summary"])
    print(f"wrote {out}/fit.json, fit.md and PNGs")
    return 0
