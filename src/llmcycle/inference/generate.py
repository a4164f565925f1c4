"""From a prompt to a completion: prefill once, then decode one token at a time with a KV cache.

`generate_ids` works on token ids for a batch of prompts of different lengths (left-padded,
with a padding mask and per-row positions). `generate` adds the tokenizer: text in, text out,
stop strings, several samples per prompt, and streaming through a callback. `use_cache=False`
recomputes the whole context for every token: the slow reference the cached path is tested
against. `compile=True` runs every decoding step after the prefill through one `torch.compile`d
`DecoderLM.step` (fixed shapes: the cache is addressed by a slot tensor), which removes most of the
per-token Python and dispatch cost; the first call pays the compilation (tens of seconds on a CPU).
`generate` hands seq2seq runs to `seq2seq.py`; both share `decoding.py` (the sampling loop, stop
handling, completions), `batching.py` (padding) and the torch-free settings of `config.py`.
"""

from __future__ import annotations

from typing import Callable

import torch

from llmcycle.inference.aot import aot_step
from llmcycle.inference.batching import left_pad, positions
from llmcycle.inference.config import GenerationConfig, SamplingConfig
from llmcycle.inference.decoding import Completion, completions, decode_loop, seeded_generator, text_watcher
from llmcycle.inference.kv_cache import KVCache
from llmcycle.inference.seq2seq import generate_seq2seq


def fit_prompt(ids: list[int], max_seq_len: int, max_new_tokens: int, truncate: str) -> list[int]:
    """Make room for at least one new token; left-truncate or raise, as asked."""
    if not ids:
        raise ValueError("empty prompt: give at least one token (the run's tokenizer adds <|bos|> by default)")
    room = max_seq_len - 1
    if len(ids) <= room:
        return ids
    if truncate == "left":
        return ids[-room:]
    raise ValueError(
        f"prompt is {len(ids)} tokens but the model's context is {max_seq_len}; "
        f"shorten it or pass --truncate left to keep its last {room} tokens"
    )


@torch.inference_mode()
def generate_ids(model, prompts: list[list[int]], max_new_tokens: int, sampling: SamplingConfig,
                 generator: torch.Generator | None = None, eos_id: int | None = None, pad_id: int = 0,
                 use_cache: bool = True, on_step: Callable[[torch.Tensor], bool] | None = None,
                 compile: bool = False) -> list[list[int]]:
    """Generate up to max_new_tokens for each prompt (lists of ids). Returns the new ids per row.
    Stops early when every row has produced eos_id, or when on_step(next_ids) returns True.
    compile: decode through the compiled fixed-shape step (see the module docstring)."""
    model.eval()
    cfg, device = model.cfg, next(model.parameters()).device
    B = len(prompts)
    idx, pad, pos = left_pad(prompts, pad_id, device)
    T0 = idx.shape[1]
    max_new_tokens = min(max_new_tokens, cfg.max_seq_len - T0)
    if max_new_tokens < 1:
        raise ValueError(f"no room to generate: the prompt fills the {cfg.max_seq_len}-token context")
    if pad is not None:  # room for the new tokens' slots, never padding
        pad = torch.cat([pad, torch.zeros(B, max_new_tokens, dtype=torch.bool, device=device)], 1)
    cache = None
    if use_cache:
        dtype = next(model.parameters()).dtype
        cache = KVCache(cfg.n_layer, B, cfg.kv_heads, cfg.hd, T0 + max_new_tokens, device, dtype)
    logits, _ = model(idx, cache=cache, pos=pos, pad=pad, last_only=True)  # prefill: (B, 1, V)
    last = pos[..., -1:]  # (1,) or (B, 1): the last prompt position of each row
    aot = fixed = None
    if compile and use_cache:
        aot = ahead_of_time_step(model, B, cache.k[0].dtype)
        fixed = compiled_step(model) if aot is None else None
    if aot is not None:  # the step's inputs, made once: only the counter n changes per token
        n_t, base = torch.zeros(1, dtype=torch.long, device=device), torch.tensor([T0 - 1], device=device)
        last_b = last.expand(B, 1).contiguous() if last.dim() == 2 else last.view(1, 1).expand(B, 1).contiguous()
        pad_b = pad if pad is not None else torch.zeros(B, cache.max_len, dtype=torch.bool, device=device)

    def step(nxt: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if aot is not None:  # new token n goes to cache slot T0 + n - 1, at position last + n
            n_t.fill_(out.shape[1])
            return aot(nxt.view(B, 1), n_t, base, last_b, pad_b, cache.k, cache.v)
        if fixed is not None:
            n = out.shape[1]
            return fixed(nxt[:, None], last + n, cache, torch.tensor([T0 + n - 1], device=device), pad)
        if use_cache and pad is None:  # every row at the same position: the cache's (no position tensor, no check)
            return model(nxt[:, None], cache=cache)[0]
        if use_cache:  # one new token per row; its keys/values join the cache
            return model(nxt[:, None], cache=cache, pos=last + out.shape[1], pad=pad)[0]
        full = torch.cat([idx, out], 1)  # (B, S): the whole context, recomputed
        fpad = pad[:, :full.shape[1]] if pad is not None else None
        fpos = positions(fpad) if fpad is not None else None
        return model(full, pos=fpos, pad=fpad, last_only=True)[0]

    out = decode_loop(logits, step, max_new_tokens, sampling, generator, eos_id, on_step)
    return [row.tolist() for row in out]


def ahead_of_time_step(model, batch: int, dtype: torch.dtype) -> Callable | None:
    """The AOTInductor-compiled step (inference/aot.py) for this batch size, or None where it cannot be
    built (then `compiled_step`, torch.compile, serves; a missing C++ compiler is reported there)."""
    if batch in getattr(model, "_aot_failed", ()) or next(model.parameters()).device.type != "cpu":
        return None
    try:
        return aot_step(model, batch, dtype)
    except Exception:  # an op AOTInductor cannot take, no compiler...: the torch.compile step instead
        model._aot_failed = getattr(model, "_aot_failed", set()) | {batch}
        return None


def compiled_step(model) -> Callable:
    """`torch.compile(model.step)`, made once per model and kept on it (later generations reuse the
    graph; shapes are dynamic, so another prompt or cache length does not recompile)."""
    if getattr(model, "_compiled_step", None) is None:
        # realize_opcount_threshold 0: materialize every intermediate (they are one token wide) rather
        # than recompute it inside a consumer's loop; without it inductor re-ran the final norm for each
        # of the head's 49,152 rows (SmolLM2 int4: 55 -> 68 tokens/s).
        compiled = torch.compile(model.step, fullgraph=True, dynamic=True, options={"realize_opcount_threshold": 0})

        def step(*args):
            try:
                return compiled(*args)
            except torch._dynamo.exc.BackendCompilerFailed as e:
                first = str(e).strip().splitlines()[0][:300]
                raise ValueError(f"--compile: torch.compile could not build the decoding step ({first}); on a CPU "
                                 "inductor needs a working C++ compiler (g++): install one, or drop --compile") from e

        model._compiled_step = step
    return model._compiled_step


def generate(model, tokenizer, prompts: list[str], cfg: GenerationConfig, add_bos: bool = True,
             on_text: Callable[[int, str], None] | None = None,
             encode: Callable[[str], list[int]] | None = None) -> list[Completion]:
    """Text in, completions out: num_samples completions per prompt, in prompt order.
    `encode` turns a prompt into ids (default: the tokenizer, with bos if add_bos; chat.py passes a chat encoder)."""
    family = model.cfg.family
    if family == "seq2seq":  # the prompt is the encoder's input (inference/seq2seq.py)
        if cfg.compile:
            raise ValueError("compile applies to decoder models; seq2seq generation runs eagerly (drop --compile)")
        return generate_seq2seq(model, tokenizer, prompts, cfg, on_text)
    if family != "decoder":
        raise ValueError(f"{family} models do not generate text; use `llmcycle fill-mask` for encoder runs")
    if not prompts:
        raise ValueError("no prompts given")
    encode = encode or (lambda p: tokenizer.encode(p, bos=add_bos and tokenizer.bos_id is not None))
    encoded = [fit_prompt(encode(p), model.cfg.max_seq_len, cfg.max_new_tokens, cfg.truncate) for p in prompts]
    rows = [ids for ids in encoded for _ in range(cfg.num_samples)]
    generator = seeded_generator(model, cfg.seed)
    eos_id = tokenizer.eos_id if cfg.stop_at_eos else None
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    new = generate_ids(model, rows, cfg.max_new_tokens, cfg.sampling, generator, eos_id, pad_id,
                       cfg.use_cache, text_watcher(tokenizer, cfg, eos_id, len(rows), on_text), cfg.compile)
    return completions(new, tokenizer, cfg, eos_id, prompts)
