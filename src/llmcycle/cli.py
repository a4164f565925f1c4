"""The `llmcycle` command: one verb per lifecycle stage, all reading and writing a run directory.

Each stage package's `cli.py` defines its verbs: `add_arguments(parser)` and `run(args) -> int`
(or `add_<verb>_arguments` / `run_<verb>` where a package has several). This file is only the
table that mounts them. Every stage module imported here is torch-free at import time, so
`llmcycle --help` and `llmcycle plan` stay fast; torch is imported when a verb runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (verb, "module" or "module:verb_name", help) in lifecycle order
VERBS = [
    ("run", "llmcycle.lifecycle.cli", "the whole lifecycle on the default corpus: prepare, train, evaluate, prompt"),
    ("plan", "llmcycle.plan.cli", "memory, compute and scaling-law planner"),
    ("prepare", "llmcycle.data.cli", "corpus -> tokenizer -> token shards in RUN/data"),
    ("train", "llmcycle.train.cli", "pretrain the model of RUN under a budget (steps, tokens or seconds)"),
    ("finetune", "llmcycle.finetune.cli", "supervised fine-tuning (full or LoRA) of a decoder run on prompt/completion "
                                          "or chat JSONL, or an eval task; --merge for plain weights"),
    ("import", "llmcycle.hub.cli:import", "a Hugging Face folder, hub model or GGUF file -> a run directory"),
    ("export", "llmcycle.hub.cli:export", "a run's decoder -> a Hugging Face folder (--to hf OUT) or a GGUF file (--to gguf F)"),
    ("generate", "llmcycle.inference.cli:generate", "complete prompts with the model of RUN"),
    ("chat", "llmcycle.inference.cli:chat", "talk with the (instruction-tuned) model of RUN: streaming, history"),
    ("fill-mask", "llmcycle.inference.cli:fill_mask", "the top-k candidates for each <mask> in a text (encoder runs)"),
    ("eval", "llmcycle.evaluation.cli", "zero/one/few-shot evaluation on a task (metric per shot count)"),
    ("serve", "llmcycle.serve.cli", "OpenAI-compatible server (completions, chat, streaming) with a playground"),
    ("scale", "llmcycle.scale.cli", "scaling-law lab: IsoFLOP sweep of runs, Chinchilla's fits (docs/scale.md)"),
]


def _verb_functions(target: str):
    """(add_arguments, run) of a table entry."""
    module, _, name = target.partition(":")
    mod = importlib.import_module(module)
    if not name:
        return mod.add_arguments, mod.run
    return getattr(mod, f"add_{name}_arguments"), getattr(mod, f"run_{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmcycle", description="A workbench for the whole life of a language "
                                     "model: plan, prepare, pretrain, generate, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb, target, help_ in VERBS:
        add_arguments, run = _verb_functions(target)
        p = sub.add_parser(verb, help=help_, description=help_, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(p)
        p.set_defaults(func=run)
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
