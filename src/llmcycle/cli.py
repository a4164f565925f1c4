"""The `llmcycle` command: one subcommand per lifecycle stage, all reading and writing a run directory.

    llmcycle run                      the whole lifecycle on the default corpus in ~3 minutes
    llmcycle prepare --run DIR        corpus -> tokenizer -> token shards
    llmcycle train --run DIR          pretrain under a budget (steps, tokens or seconds); --resume
    llmcycle generate --run DIR ...   prompt -> completion with every sampling control (--chat: chat template)
    llmcycle fill-mask --run DIR TEXT top-k candidates for each <mask> (encoder runs)
    llmcycle chat --run DIR           interactive chat with streaming output and history
    llmcycle import SOURCE --out DIR  Hugging Face folder / hub name / GGUF file -> run directory
    llmcycle export --run DIR --to hf OUT   a run's decoder -> Hugging Face folder
    llmcycle eval --run DIR --task T  zero/one/few-shot evaluation: metric per shot count, eval/<task>.json
    llmcycle plan ...                 memory / compute / scaling-law planner

Config flags are generated from the dataclasses in `config.py`; their help is the comment on
each field there, so the two never drift. Only flags given on the command line override a run
directory's saved config.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from llmcycle.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from llmcycle.flags import add_dataclass_flags as add_config_flags, merged

# ------------------------------------------------------------------ commands


def cmd_prepare(args) -> int:
    from llmcycle.data.prepare import prepare
    from llmcycle.rundir import config_path, data_dir

    run = Path(args.run)
    base = RunConfig.load(config_path(run)) if config_path(run).is_file() else RunConfig()
    data = merged(base.data, DataConfig, args)
    meta = prepare(data, data_dir(run), progress=not args.quiet)
    vocab = meta["vocab_size"] if data.tokenizer in ("bpe", "byte") else max(meta["vocab_size"], base.model.vocab_size)
    model = dataclasses.replace(base.model, vocab_size=vocab)  # a reused tokenizer may be smaller than the embedding
    RunConfig(model=model, data=data, train=base.train).save(config_path(run))
    print(f"prepared {meta['splits']['train']['tokens']:,} train and {meta['splits']['val']['tokens']:,} val tokens "
          f"({meta['vocab_size']} vocab) in {data_dir(run)}")
    return 0


def _init_model_config(src: Path) -> ModelConfig:
    """The ModelConfig of an --init-from source: a run directory or one of its checkpoints."""
    from llmcycle.rundir import load_config, owning_run

    return load_config(owning_run(src)).model


def cmd_train(args) -> int:
    from llmcycle.rundir import config_path
    from llmcycle.train.loop import train

    run = Path(args.run)
    if not config_path(run).is_file():
        raise ValueError(f"{run} has no config.json: run `llmcycle prepare --run {run}` first")
    base = RunConfig.load(config_path(run))
    model = base.model
    if getattr(args, "init_from", None) and not args.resume:  # continued pretraining: the architecture comes along
        model = _init_model_config(Path(args.init_from))
    cfg = RunConfig(model=merged(model, ModelConfig, args), data=base.data,
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
    from llmcycle.runtime import print0  # under torchrun every rank gets here

    print0(f"trained {state['step']} steps, {state['tokens']:,} tokens; val loss {state['val']['val_loss']:.4f}")
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
                            use_cache=not args.no_cache, compile=args.compile)


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
    g.add_argument("--quantize", choices=["int8", "int4"], default=None,
                   help="weight-only int8/int4 linear layers: faster CPU decoding, approximate (default: fp32, exact)")
    g.add_argument("--compile", action="store_true",
                   help="decode through a torch.compile'd step: faster per token, tens of seconds to compile first "
                        "(needs a C++ compiler on CPU; default: off)")


def _inference_model(args):
    """The run's model, weight-only quantized when --quantize asks."""
    from llmcycle.rundir import load_model

    model, _ = load_model(Path(args.run))
    if args.quantize:
        from llmcycle.inference.weight_only import quantize_weights

        quantize_weights(model, args.quantize)
    return model


def cmd_generate(args) -> int:
    from llmcycle.inference.chat import chat_encoder, prompt_style
    from llmcycle.inference.generate import generate
    from llmcycle.rundir import load_tokenizer

    prompts = _read_prompts(args)
    model = _inference_model(args)
    tok = load_tokenizer(Path(args.run))
    gen = generation_config(args)
    style = prompt_style(Path(args.run), tok)
    encode = chat_encoder(tok, style, args.system) if args.chat else None  # --chat: each prompt is a user turn
    stream = len(prompts) * gen.num_samples == 1
    on_text = (lambda r, piece: print(piece, end="", flush=True)) if stream else None
    seq2seq = model.cfg.family == "seq2seq"  # the prompt is the encoder's input; the output stands apart
    if stream and not args.chat:
        print(prompts[0] + ("\n=> " if seq2seq else ""), end="", flush=True)
    outs = generate(model, tok, prompts, gen, add_bos=style.add_bos, on_text=on_text, encode=encode)
    if stream:
        print()
        return 0
    for i, c in enumerate(outs):
        print(f"--- prompt {i // gen.num_samples + 1}, sample {i % gen.num_samples + 1} ({c.finish_reason})")
        print(c.text if args.chat else c.prompt + ("\n=> " if seq2seq else "") + c.text)
    return 0


def cmd_fill_mask(args) -> int:
    from llmcycle.inference.fill_mask import fill_mask, filled_text
    from llmcycle.rundir import load_model, load_tokenizer

    text = sys.stdin.read() if args.text == "-" else args.text
    model, _ = load_model(Path(args.run))
    tok = load_tokenizer(Path(args.run))
    preds = fill_mask(model, tok, text, args.top_k)
    for p in preds:
        print(f"<mask> {p.index + 1} (token {p.position}):")
        for token, prob in p.candidates:
            print(f"  {prob:7.2%}  {token!r}")
    print(f"most likely: {filled_text(text, preds)!r}")
    return 0


def cmd_chat(args) -> int:
    from llmcycle.inference.chat import ChatSession, interactive, prompt_style
    from llmcycle.rundir import load_tokenizer

    model = _inference_model(args)
    tok = load_tokenizer(Path(args.run))
    session = ChatSession(model, tok, prompt_style(Path(args.run), tok), generation_config(args), args.system)
    interactive(session, sys.stdin, sys.stdout, banner=f"chatting with {args.run} ({session.gen.sampling.describe()}); ")
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
    p.add_argument("--chat", action="store_true", help="apply the model's chat template: each prompt is a user turn")
    p.add_argument("--system", default=None, help="system message for --chat (default: the template's own)")
    add_generation_flags(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("fill-mask", help="the top-k candidates for each <mask> in a text (encoder runs)")
    p.add_argument("--run", required=True, help="run directory with a trained encoder (--family encoder)")
    p.add_argument("text", help="text with one or more <mask>; '-' reads stdin")
    p.add_argument("--top-k", type=int, default=5, help="candidates shown per mask (default: 5)")
    p.set_defaults(func=cmd_fill_mask)

    p = sub.add_parser("chat", help="talk with the (instruction-tuned) model of RUN: streaming, history, sampling")
    p.add_argument("--run", required=True, help="run directory with a model that has a chat template")
    p.add_argument("--system", default=None, help="system message (default: the template's own)")
    add_generation_flags(p)
    p.set_defaults(func=cmd_chat)

    from llmcycle.hub.cli import add_export_arguments, add_import_arguments, run_export, run_import

    p = sub.add_parser("import", help="a Hugging Face folder, hub model or GGUF file -> a run directory")
    add_import_arguments(p)
    p.set_defaults(func=run_import)
    p = sub.add_parser("export", help="a run's decoder -> a Hugging Face folder (--to hf OUT)")
    add_export_arguments(p)
    p.set_defaults(func=run_export)

    from llmcycle.evaluation.cli import add_arguments as eval_args, run as eval_run

    p = sub.add_parser("eval", help="zero/one/few-shot evaluation on a task (metric per shot count)", formatter_class=fmt)
    eval_args(p)
    p.set_defaults(func=eval_run)

    p = sub.add_parser("run", help="the whole lifecycle on the default corpus: prepare, train, evaluate, prompt")
    p.add_argument("--out", default="runs/default", help="run directory (default: runs/default)")
    p.add_argument("--budget", type=float, default=180.0, help="training budget in seconds (default: 180)")
    p.add_argument("--corpus", default="default", help="text file, folder, .jsonl, or 'default' = Python stdlib source")
    p.add_argument("--max-bytes", type=int, default=None, help="read at most this many bytes of the corpus (default: all)")
    p.add_argument("--family", choices=["decoder", "encoder", "seq2seq"], default="decoder",
                   help="decoder (causal LM), encoder (masked LM) or seq2seq (span corruption) (default: decoder)")
    p.add_argument("--size", choices=["compute-optimal", "fixed"], default="compute-optimal",
                   help="decoder size: compute-optimal for the budget at this machine's measured FLOP/s (the lab fit "
                        "of --scale-fit, else Chinchilla's), or the fixed 4 x 128 model (default: compute-optimal)")
    p.add_argument("--scale-fit", default=None, help="fit.json (or its folder) from `llmcycle scale fit` on this corpus")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    from llmcycle.plan.cli import add_arguments as plan_args, run as plan_run

    p = sub.add_parser("plan", help="memory, compute and scaling-law planner", formatter_class=fmt)
    plan_args(p)
    p.set_defaults(func=plan_run)

    from llmcycle.scale.cli import add_arguments as scale_args, run as scale_run

    p = sub.add_parser("scale", help="scaling-law lab: IsoFLOP sweep of runs, Chinchilla fits", formatter_class=fmt)
    scale_args(p)
    p.set_defaults(func=scale_run)
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
