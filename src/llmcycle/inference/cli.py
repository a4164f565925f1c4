"""The inference verbs: `llmcycle generate`, `llmcycle chat`, `llmcycle fill-mask`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory with a trained or imported model")
    p.add_argument("prompt", nargs="*", help="prompt text(s); '-' reads stdin")
    p.add_argument("--file", help="read prompts from a file")
    p.add_argument("--separator", default="\n\n\n", help="separates prompts in --file (default: two blank lines)")
    p.add_argument("--chat", action="store_true", help="apply the model's chat template: each prompt is a user turn")
    p.add_argument("--system", default=None, help="system message for --chat (default: the template's own)")
    add_generation_flags(p)


def add_fill_mask_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory with a trained encoder (--family encoder)")
    p.add_argument("text", help="text with one or more <mask>; '-' reads stdin")
    p.add_argument("--top-k", type=int, default=5, help="candidates shown per mask (default: 5)")


def add_chat_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory with a model that has a chat template")
    p.add_argument("--system", default=None, help="system message (default: the template's own)")
    add_generation_flags(p)


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


def run_generate(args) -> int:
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


def run_fill_mask(args) -> int:
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


def run_chat(args) -> int:
    from llmcycle.inference.chat import ChatSession, interactive, prompt_style
    from llmcycle.rundir import load_tokenizer

    model = _inference_model(args)
    tok = load_tokenizer(Path(args.run))
    session = ChatSession(model, tok, prompt_style(Path(args.run), tok), generation_config(args), args.system)
    interactive(session, sys.stdin, sys.stdout, banner=f"chatting with {args.run} ({session.gen.sampling.describe()}); ")
    return 0
