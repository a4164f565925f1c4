"""Command-line glue for `llmcycle import` and `llmcycle export` (registered by `llmcycle/cli.py`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a .gguf file, a Hugging Face model folder (config.json + safetensors), "
                                   "or a hub name such as HuggingFaceTB/SmolLM2-135M-Instruct (needs network)")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) (default: main)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory at --out")


def run_import(args) -> int:
    from llmcycle.hub.importer import import_model  # torch only when the verb runs: --help stays fast

    s = import_model(args.source, Path(args.out), args.revision, args.overwrite)
    print(f"imported {args.source} -> {s['out']}: {s['architecture']}, {s['params'] / 1e6:.1f}M parameters, "
          f"{s['layers']} layers, vocab {s['vocab']}, context {s['context']}"
          f"{', chat template' if s['chat_template'] else ''}")
    print(f"try: llmcycle generate --run {s['out']} --temperature 0 'Once upon a time'"
          + (f"   or: llmcycle chat --run {s['out']}" if s["chat_template"] else ""))
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory with a trained or imported decoder")
    p.add_argument("--to", required=True, nargs=2, metavar=("FORMAT", "OUT"),
                   help="target format and folder or file, e.g. --to hf exported/ or --to gguf model.gguf")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder (or over a file)")
    p.add_argument("--gguf-type", choices=["f32", "f16", "q8_0"], default="f32",
                   help="--to gguf: how the weight matrices are stored (norms stay f32)")


def run_export(args) -> int:
    from llmcycle.hub.export import export_model  # torch only when the verb runs: --help stays fast

    fmt, out = args.to
    s = export_model(Path(args.run), fmt, Path(out), args.overwrite, args.gguf_type)
    if fmt == "gguf":
        print(f"exported {args.run} -> {s['out']} (GGUF {s['type']}, {s['tensors']} tensors, {s['bytes'] / 1e6:.1f} MB); "
              f"llama.cpp loads it, and so does `llmcycle import {s['out']} --out RUN`")
        return 0
    print(f"exported {args.run} -> {s['out']} ({s['architecture']}, {s['tensors']} tensors); "
          f"load it with transformers.AutoModelForCausalLM.from_pretrained({s['out']!r})")
    return 0
