"""The `llmcycle` command: one subcommand per lifecycle stage, all reading and writing a run directory.

    llmcycle run                      the whole lifecycle on the default corpus in ~3 minutes
    llmcycle prepare --run DIR        corpus -> tokenizer -> token shards
    llmcycle train --run DIR          pretrain under a budget (steps, tokens or seconds); --resume
    llmcycle generate --run DIR ...   prompt -> completion with every sampling control
    llmcycle plan ...                 memory / compute / scaling-law planner

Config flags are generated from the dataclasses in `config.py`; their help is the comment on
each field there, so the two never drift. Only flags given on the command line override a run
directory's saved config.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import types
import typing
from pathlib import Path

from llmcycle.config import DataConfig, ModelConfig, RunConfig, TrainConfig

# ------------------------------------------------------------------ flags from dataclasses


def _field_comments(cls) -> dict[str, str]:
    src = inspect.getsource(cls)
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+): [^\n#]*#\s*(.*)$", src, re.M)}


def _flag_type(tp):
    """(argparse type, nargs, is_bool) for a dataclass field annotation such as `int | None`."""
    if isinstance(tp, str):
        tp = eval(tp, vars(typing), {"dict": dict, "list": list})  # annotations are strings (PEP 563)
    args = [a for a in typing.get_args(tp) if a is not type(None)] if isinstance(tp, types.UnionType) else [tp]
    base = args[0]
    if base is bool:
        return None, None, True
    if typing.get_origin(base) is list:
        return typing.get_args(base)[0], "*", False
    if base is dict:
        return None, None, False
    return base, None, False


def add_config_flags(parser: argparse.ArgumentParser, cls, title: str, skip: tuple = ()) -> None:
    """One --kebab-case flag per field; default=SUPPRESS so only given flags reach the namespace."""
    group = parser.add_argument_group(title)
    comments = _field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        typ, nargs, is_bool = _flag_type(f.type)
        if typ is None and not is_bool:
            continue  # dict-valued fields are set in config.json, not on the command line
        d = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f"{comments.get(f.name, '')} (default: {d})".strip()
        flag = "--" + f.name.replace("_", "-")
        if is_bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_)
        else:
            group.add_argument(flag, type=typ, nargs=nargs, default=argparse.SUPPRESS, help=help_, dest=f.name,
                               metavar=f.name.upper())


def overrides(args: argparse.Namespace, cls) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def merged(base, cls, args):
    """A copy of dataclass `base` with the command-line overrides applied (and validated)."""
    return cls(**{**dataclasses.asdict(base), **overrides(args, cls)})


# ------------------------------------------------------------------ commands


def cmd_prepare(args) -> int:
    from llmcycle.data.prepare import prepare
    from llmcycle.rundir import config_path, data_dir

    run = Path(args.run)
    base = RunConfig.load(config_path(run)) if config_path(run).is_file() else RunConfig()
    data = merged(base.data, DataConfig, args)
    meta = prepare(data, data_dir(run), progress=not args.quiet)
    model = dataclasses.replace(base.model, vocab_size=meta["vocab_size"])
    RunConfig(model=model, data=data, train=base.train).save(config_path(run))
    print(f"prepared {meta['splits']['train']['tokens']:,} train and {meta['splits']['val']['tokens']:,} val tokens "
          f"({meta['vocab_size']} vocab) in {data_dir(run)}")
    return 0


def cmd_train(args) -> int:
    from llmcycle.rundir import config_path
    from llmcycle.train.loop import train

    run = Path(args.run)
    if not config_path(run).is_file():
        raise ValueError(f"{run} has no config.json: run `llmcycle prepare --run {run}` first")
    base = RunConfig.load(config_path(run))
    cfg = RunConfig(model=merged(base.model, ModelConfig, args), data=base.data,
                    train=merged(base.train, TrainConfig, args))
    if not args.resume:
        cfg.save(config_path(run))
    if args.nproc is None:
        state = train(run, cfg, resume=args.resume, progress=not args.quiet)
    else:  # the same workers torchrun would start, through its launcher API
        from llmcycle.train.parallel import WorkerFailed, train_processes

        try:
            state = train_processes(args.nproc, run, cfg, resume=args.resume, progress=not args.quiet)
        except WorkerFailed as e:
            print(f"llmcycle train: error: {e}", file=sys.stderr)
            return 1
    print(f"trained {state['step']} steps, {state['tokens']:,} tokens; val loss {state['val']['val_loss']:.4f}")
    return 0


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise ValueError(f"--file {path} not found")
        prompts += [p for p in path.read_text(encoding="utf-8").split(args.separator) if p.strip()]
    if prompts == ["-"] or (not prompts and not sys.stdin.isatty()):
        prompts = [sys.stdin.read()]
    if not prompts:
        raise ValueError("give a prompt: as an argument, with --file, or on stdin")
    return prompts


def generation_config(args):
    from llmcycle.inference.generate import GenerationConfig
    from llmcycle.inference.sampling import SamplingConfig

    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    return GenerationConfig(max_new_tokens=args.max_new_tokens, sampling=sampling, stop=args.stop or [],
                            seed=args.seed, num_samples=args.num_samples, truncate=args.truncate,
                            use_cache=not args.no_cache)


def add_generation_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate at most (default: 128)")
    g.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (argmax); higher = more random (default: 0.8)")
    g.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens (default: off)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set with mass >= p (default: off)")
    g.add_argument("--stop", action="append", help="stop string; the completion ends before it (repeatable)")
    g.add_argument("--seed", type=int, default=None, help="random seed: one seed gives one text (default: none)")
    g.add_argument("--num-samples", type=int, default=1, help="completions per prompt (default: 1)")
    g.add_argument("--truncate", choices=["error", "left"], default="error",
                   help="a prompt longer than the context: error, or keep its last tokens (default: error)")
    g.add_argument("--no-cache", action="store_true", help="recompute the whole context per token (slow reference)")


def cmd_generate(args) -> int:
    from llmcycle.inference.generate import generate
    from llmcycle.rundir import load_model, load_tokenizer

    prompts = _read_prompts(args)
    model, _ = load_model(Path(args.run))
    tok = load_tokenizer(Path(args.run))
    gen = generation_config(args)
    stream = len(prompts) * gen.num_samples == 1
    on_text = (lambda r, piece: print(piece, end="", flush=True)) if stream else None
    if stream:
        print(prompts[0], end="", flush=True)
    outs = generate(model, tok, prompts, gen, on_text=on_text)
    if stream:
        print()
        return 0
    for i, c in enumerate(outs):
        print(f"--- prompt {i // gen.num_samples + 1}, sample {i % gen.num_samples + 1} ({c.finish_reason})")
        print(c.prompt + c.text)
    return 0


def cmd_run(args) -> int:
    from llmcycle.lifecycle import run_lifecycle

    run_lifecycle(args)
    return 0


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmcycle", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("prepare", help="corpus -> tokenizer -> token shards in RUN/data")
    p.add_argument("--run", required=True, help="run directory to create or update")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p, DataConfig, "data")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="pretrain the model of RUN under a budget")
    p.add_argument("--run", required=True, help="run directory prepared by `llmcycle prepare`")
    p.add_argument("--resume", action="store_true", help="continue exactly from the newest complete checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=None,
                   help="start N worker processes on this machine, as torchrun --nproc_per_node=N would "
                        "(with --strategy ddp or fsdp; default: one process, or torchrun's)")
    add_config_flags(p, ModelConfig, "model")
    add_config_flags(p, TrainConfig, "training")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="complete prompts with the model of RUN")
    p.add_argument("--run", required=True, help="run directory with a trained or imported model")
    p.add_argument("prompt", nargs="*", help="prompt text(s); '-' reads stdin")
    p.add_argument("--file", help="read prompts from a file")
    p.add_argument("--separator", default="\n\n\n", help="separates prompts in --file (default: two blank lines)")
    add_generation_flags(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("run", help="the whole lifecycle on the default corpus: prepare, train, evaluate, prompt")
    p.add_argument("--out", default="runs/default", help="run directory (default: runs/default)")
    p.add_argument("--budget", type=float, default=180.0, help="training budget in seconds (default: 180)")
    p.add_argument("--corpus", default="default", help="text file, folder, .jsonl, or 'default' = Python stdlib source")
    p.add_argument("--max-bytes", type=int, default=None, help="read at most this many bytes of the corpus (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    try:
        from llmcycle.plan.cli import add_arguments as plan_args, run as plan_run

        p = sub.add_parser("plan", help="memory, compute and scaling-law planner", formatter_class=fmt)
        plan_args(p)
        p.set_defaults(func=lambda a: plan_run(a))
    except ImportError:
        pass
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"llmcycle {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; the last complete checkpoint is intact (use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
