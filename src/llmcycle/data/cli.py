"""`llmcycle prepare`: corpus -> tokenizer -> token shards in RUN/data, and RUN/config.json.

    llmcycle prepare --run R [--source FILE|DIR|X.jsonl] [--tokenizer bpe|byte|PATH] [--mix a=SRC:0.5 ...]

The data flags are generated from `DataConfig`; a flag not given keeps the value of the run's saved
config (or the default for a new run). Over a run that has checkpoints it refuses unless
`--overwrite` (see `prepare.prepare_run`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llmcycle import rundir
from llmcycle.config import DataConfig, RunConfig
from llmcycle.data.prepare import prepare_run
from llmcycle.flags import add_dataclass_flags, merged


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory to create or update")
    p.add_argument("--overwrite", action="store_true",
                   help="prepare over a run that has checkpoints: delete them and its metrics (they were trained "
                        "on the data being replaced)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_flags(p, DataConfig, "data")


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    base = rundir.load_config(run_dir) if rundir.is_run(run_dir) else RunConfig()
    data = merged(base.data, DataConfig, args)
    meta, cfg = prepare_run(run_dir, data, base, overwrite=args.overwrite, progress=not args.quiet)
    train, val = meta["splits"]["train"]["tokens"], meta["splits"]["val"]["tokens"]
    print(f"prepared {train:,} train and {val:,} val tokens ({meta['vocab_size']} vocab, model vocab_size "
          f"{cfg.model.vocab_size}) in {rundir.data_dir(run_dir)}")
    return 0
