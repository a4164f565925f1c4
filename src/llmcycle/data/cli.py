"""`llmcycle prepare --run RUN`: corpus -> tokenizer -> token shards in RUN/data."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from llmcycle import rundir
from llmcycle.config import DataConfig, RunConfig
from llmcycle.flags import add_dataclass_flags, merged


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory to create or update")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_flags(p, DataConfig, "data")


def run(args) -> int:
    from llmcycle.data.prepare import prepare  # the tokenizers library only when preparing

    run = Path(args.run)
    base = rundir.load_config(run) if rundir.is_run(run) else RunConfig()
    data = merged(base.data, DataConfig, args)
    meta = prepare(data, rundir.data_dir(run), progress=not args.quiet)
    vocab = meta["vocab_size"] if data.tokenizer in ("bpe", "byte") else max(meta["vocab_size"], base.model.vocab_size)
    model = dataclasses.replace(base.model, vocab_size=vocab)  # a reused tokenizer may be smaller than the embedding
    rundir.save_config(run, RunConfig(model=model, data=data, train=base.train))
    print(f"prepared {meta['splits']['train']['tokens']:,} train and {meta['splits']['val']['tokens']:,} val tokens "
          f"({meta['vocab_size']} vocab) in {rundir.data_dir(run)}")
    return 0
