"""`llmcycle train --run RUN`: pretrain the run's model under a budget; `--resume` continues exactly.

Flags for every ModelConfig and TrainConfig field are generated from the dataclasses. Only flags
given on the command line override the run's config.json; a budget flag (`--max-steps`,
`--max-tokens`, `--max-time`) replaces the saved budget rather than adding to it, on a fresh run
and on `--resume` alike. The config on disk is written by the training loop once it is valid.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from llmcycle import rundir
from llmcycle.config import ModelConfig, RunConfig, TrainConfig
from llmcycle.flags import add_dataclass_flags, given, merged
from llmcycle.train.state import BUDGETS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory prepared by `llmcycle prepare`")
    p.add_argument("--resume", action="store_true", help="continue exactly from the newest complete checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a run that already has checkpoints (deletes them and its metrics)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=None,
                   help="start N worker processes on this machine, as torchrun --nproc_per_node=N would "
                        "(with --strategy ddp or fsdp; default: one process, or torchrun's)")
    add_dataclass_flags(p, ModelConfig, "model")
    add_dataclass_flags(p, TrainConfig, "training")


def config_from_args(args) -> RunConfig:
    """The run's saved config with the command line applied."""
    run = Path(args.run)
    if not rundir.is_run(run):
        raise ValueError(f"{run} has no {rundir.CONFIG}: run `llmcycle prepare --run {run}` first")
    base = rundir.load_config(run)
    model = base.model
    if args.resume and given(args, ModelConfig):
        raise ValueError(f"--resume continues the saved model; drop {sorted(given(args, ModelConfig))} "
                         "or start a new run")
    init_from = getattr(args, "init_from", None)
    if init_from and not args.resume:  # continued pretraining: the architecture comes along
        model = rundir.load_config(rundir.owning_run(Path(init_from))).model
    train = base.train
    if any(hasattr(args, b) for b in BUDGETS):  # the budget given replaces the saved one
        train = dataclasses.replace(train, **{b: None for b in BUDGETS if not hasattr(args, b)},
                                    **{b: getattr(args, b) for b in BUDGETS if hasattr(args, b)})
    return RunConfig(model=merged(model, ModelConfig, args), data=base.data, train=merged(train, TrainConfig, args))


def run(args) -> int:
    from llmcycle.runtime import print0  # torch only once training starts (keeps --help fast)
    from llmcycle.train.launch import WorkerFailed, train_processes
    from llmcycle.train.loop import train

    cfg, run_dir = config_from_args(args), Path(args.run)
    kw = dict(resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    if args.nproc is None:
        state = train(run_dir, cfg, **kw)
    else:  # the same workers torchrun would start, through its launcher API
        try:
            state = train_processes(args.nproc, run_dir, cfg, **kw)
        except WorkerFailed as e:
            print(f"llmcycle train: error: {e}", file=sys.stderr)
            return 1
    print0(f"trained {state.step} steps, {state.tokens:,} tokens; val loss {state.val['val_loss']:.4f} "
           f"(stopped by {state.stopped_by})")  # under torchrun every rank gets here
    return 0
