"""The inference verbs: `llmcycle generate`, `llmcycle chat`, `llmcycle fill-mask`, and the generation
flags every verb that decodes shares (generate, chat, eval, serve).

    add_generation_arguments(parser)  flags generated from SamplingConfig / GenerationConfig (config.py):
                                      one set of defaults, help from each field's comment
    generation_config(args)           the GenerationConfig those flags describe
    sampling_config(args)             its SamplingConfig alone (eval sweeps its own settings)
    add_model_arguments(parser)       --run and --quantize; load_inference_model(args) loads it
    add_generate_arguments / run_generate, add_chat_arguments / run_chat,
    add_fill_mask_arguments / run_fill_mask

Importing this module does not import torch (`llmcycle --help` stays fast): the modules that run a
model are imported inside the run_* functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmcycle import rundir
from llmcycle.flags import add_dataclass_flags, field_comments, given, merged
from llmcycle.inference.config import GenerationConfig, SamplingConfig

QUANTIZE = ("int8", "int4")


def add_generation_arguments(parser: argparse.ArgumentParser, skip: tuple = ()) -> None:
    """The sampling and generation flags (only those given on the command line reach `args`);
    skip: GenerationConfig fields a verb does not take (sampling fields are always added)."""
    add_dataclass_flags(parser, SamplingConfig, "sampling")
    add_dataclass_flags(parser, GenerationConfig, "generation", skip=("sampling", "stop", *skip))
    g = parser.add_argument_group("generation: stop strings, cache")
    if "stop" not in skip:  # repeatable (--stop A --stop B), which a generated list flag is not
        g.add_argument("--stop", action="append", default=argparse.SUPPRESS, metavar="STOP",
                       help=f"{field_comments(GenerationConfig)['stop']} (default: none)")
    if "use_cache" not in skip:  # the flag's old spelling, kept
        g.add_argument("--no-cache", dest="use_cache", action="store_false", default=argparse.SUPPRESS,
                       help="the same as --no-use-cache: recompute the whole context per token (slow reference)")


def sampling_config(args: argparse.Namespace) -> SamplingConfig:
    return merged(SamplingConfig(), SamplingConfig, args)


def generation_config(args: argparse.Namespace) -> GenerationConfig:
    """The defaults of config.py with the flags given on the command line applied (and validated)."""
    return GenerationConfig(**{**given(args, GenerationConfig), "sampling": sampling_config(args)})


def add_model_arguments(parser: argparse.ArgumentParser, run_help: str) -> None:
    parser.add_argument("--run", required=True, help=run_help)
    parser.add_argument("--quantize", choices=QUANTIZE, default=None,
                        help="weight-only int8/int4 linear layers: faster CPU decoding, approximate "
                             "(default: fp32, exact)")


def load_inference_model(args: argparse.Namespace):
    """The run's model, weight-only quantized when --quantize asks."""
    from llmcycle.inference.weight_only import quantize_weights  # torch: only when a verb runs

    model, _ = rundir.load_model(Path(args.run))
    if args.quantize:
        quantize_weights(model, args.quantize)
    return model


def read_prompts(args: argparse.Namespace) -> list[str]:
    """Prompts from the arguments, --file (split at --separator), or stdin ('-', or piped)."""
    prompts = list(args.prompt)
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise ValueError(f"--file {path} not found")
        try:
            found = [p for p in path.read_text(encoding="utf-8").split(args.separator) if p.strip()]
        except UnicodeDecodeError as e:
            raise ValueError(f"--file {path} is not UTF-8 text (byte {e.start}); give a text file of prompts") from None
        if not found:
            raise ValueError(f"--file {path} holds no prompt (it is empty or blank)")
        prompts += found
    if prompts == ["-"] or (not prompts and not sys.stdin.isatty()):
        prompts = [sys.stdin.read()]
    if not prompts:
        raise ValueError("give a prompt: as an argument, with --file, or on stdin")
    return prompts


# ------------------------------------------------------------------ generate


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, "run directory with a trained or imported model")
    p.add_argument("prompt", nargs="*", help="prompt text(s); '-' reads stdin")
    p.add_argument("--file", help="read prompts from a file")
    p.add_argument("--separator", default="\n\n\n", help="separates prompts in --file (default: two blank lines)")
    p.add_argument("--chat", action="store_true", help="apply the model's chat template: each prompt is a user turn")
    p.add_argument("--system", default=None, help="system message for --chat (default: the template's own)")
    add_generation_arguments(p)


def run_generate(args: argparse.Namespace) -> int:
    from llmcycle.inference.chat import chat_encoder, prompt_style  # torch: only when a verb runs
    from llmcycle.inference.generate import generate

    prompts = read_prompts(args)
    gen = generation_config(args)
    model = load_inference_model(args)
    tok = rundir.load_tokenizer(Path(args.run))
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


# ------------------------------------------------------------------ chat


def add_chat_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, "run directory with a model that has a chat template")
    p.add_argument("--system", default=None, help="system message (default: the template's own)")
    add_generation_arguments(p)


def run_chat(args: argparse.Namespace) -> int:
    from llmcycle.inference.chat import ChatSession, interactive, prompt_style  # torch: only when a verb runs

    gen = generation_config(args)
    model = load_inference_model(args)
    tok = rundir.load_tokenizer(Path(args.run))
    session = ChatSession(model, tok, prompt_style(Path(args.run), tok), gen, args.system)
    banner = f"chatting with {args.run} ({session.gen.sampling.describe()}); "
    interactive(session, sys.stdin, sys.stdout, banner=banner)
    return 0


# ------------------------------------------------------------------ fill-mask


def add_fill_mask_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory with a trained encoder (--family encoder)")
    p.add_argument("text", help="text with one or more <mask>; '-' reads stdin")
    p.add_argument("--top-k", type=int, default=5, help="candidates shown per mask (default: 5)")


def run_fill_mask(args: argparse.Namespace) -> int:
    from llmcycle.inference.fill_mask import fill_mask, filled_text  # torch: only when a verb runs

    text = sys.stdin.read() if args.text == "-" else args.text
    model, _ = rundir.load_model(Path(args.run))
    tok = rundir.load_tokenizer(Path(args.run))
    preds = fill_mask(model, tok, text, args.top_k)
    for p in preds:
        print(f"<mask> {p.index + 1} (token {p.position}):")
        for token, prob in p.candidates:
            print(f"  {prob:7.2%}  {token!r}")
    print(f"most likely: {filled_text(text, preds)!r}")
    return 0
