"""From a prompt to a completion: prefill once, then decode one token at a time with a KV cache.

`generate_ids` works on token ids for a batch of prompts of different lengths (left-padded,
with a padding mask and per-row positions). `generate` adds the tokenizer: text in, text out,
stop strings, several samples per prompt, and streaming through a callback. `use_cache=False`
recomputes the whole context for every token: the slow reference the cached path is tested
against. `compile=True` runs every decoding step after the prefill through one `torch.compile`d
`DecoderLM.step` (fixed shapes: the cache is addressed by a slot tensor), which removes most of the
per-token Python and dispatch cost; the first call pays the compilation (tens of seconds on a CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from llmcycle.inference.kv_cache import KVCache
from llmcycle.inference.sampling import SamplingConfig, sample_next


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    stop: list[str] = field(default_factory=list)  # stop strings: the completion ends before them
    seed: int | None = None
    num_samples: int = 1  # completions per prompt
    truncate: str = "error"  # error | left: what to do with a prompt longer than the context
    use_cache: bool = True
    stop_at_eos: bool = True
    compile: bool = False  # decode through a torch.compile'd fixed-shape step (needs the KV cache)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.truncate not in ("error", "left"):
            raise ValueError(f"truncate must be 'error' or 'left', got {self.truncate!r}")
        if self.compile and not self.use_cache:
            raise ValueError("compile needs the KV cache: drop --no-cache or --compile")


@dataclass
class Completion:
    prompt: str
    text: str
    tokens: list[int]
    finish_reason: str  # "eos" | "stop" | "length" (max_new_tokens or the context ran out)


def fit_prompt(ids: list[int], context: int, max_new_tokens: int, truncate: str) -> list[int]:
    """Make room for at least one new token; left-truncate or raise, as asked."""
    if not ids:
        raise ValueError("empty prompt: give at least one token (the run's tokenizer adds <|bos|> by default)")
    room = context - 1
    if len(ids) <= room:
        return ids
    if truncate == "left":
        return ids[-room:]
    raise ValueError(
        f"prompt is {len(ids)} tokens but the model's context is {context}; "
        f"shorten it or pass --truncate left to keep its last {room} tokens"
    )


def _left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """-> idx (B, T), pad (B, T) True at padding or None if no row is padded, pos (B, T) or (T,)."""
    T = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), T), pad_id, dtype=torch.long, device=device)
    n_pad = torch.tensor([T - len(p) for p in prompts], device=device)
    for i, p in enumerate(prompts):
        idx[i, T - len(p):] = torch.tensor(p, device=device)
    if int(n_pad.max()) == 0:
        return idx, None, torch.arange(T, device=device)
    slots = torch.arange(T, device=device)[None, :]
    return idx, slots < n_pad[:, None], (slots - n_pad[:, None]).clamp(min=0)


def decode_loop(logits: torch.Tensor, step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                max_new_tokens: int, sampling: SamplingConfig, generator: torch.Generator | None,
                eos_id: int | torch.Tensor | None, on_step: Callable[[torch.Tensor], bool] | None) -> torch.Tensor:
    """Sample one token per row at a time. logits (B, 1, V) come from the prefill; step(next ids (B,),
    all new ids (B, n)) returns the next logits. Stops at max_new_tokens, when every row has
    produced its end (eos_id: one id for every row, or a (B, E) tensor of the ids that end each row),
    or when on_step(next ids) returns True. Returns the new ids (B, n)."""
    B = logits.shape[0]
    out = torch.empty(B, 0, dtype=torch.long, device=logits.device)
    done = torch.zeros(B, dtype=torch.bool, device=logits.device)
    for _ in range(max_new_tokens):
        nxt = sample_next(logits[:, -1], sampling, generator)  # (B,)
        out = torch.cat([out, nxt[:, None]], 1)
        if eos_id is not None:
            done |= (nxt[:, None] == eos_id).any(-1) if torch.is_tensor(eos_id) else nxt == eos_id
        if bool(done.all()) or (on_step is not None and on_step(nxt)) or out.shape[1] == max_new_tokens:
            break
        logits = step(nxt, out)
    return out


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
    idx, pad, pos = _left_pad(prompts, pad_id, device)
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
    fixed = compiled_step(model) if compile and use_cache else None

    def step(nxt: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if fixed is not None:  # new token n goes to cache slot T0 + n - 1, at position last + n
            n = out.shape[1]
            return fixed(nxt[:, None], last + n, cache, torch.tensor([T0 + n - 1], device=device), pad)
        if use_cache:  # one new token per row; its keys/values join the cache
            return model(nxt[:, None], cache=cache, pos=last + out.shape[1], pad=pad)[0]
        full = torch.cat([idx, out], 1)  # (B, S): the whole context, recomputed
        fpad = pad[:, :full.shape[1]] if pad is not None else None
        fpos = _all_pos(fpad) if fpad is not None else None
        return model(full, pos=fpos, pad=fpad, last_only=True)[0]

    out = decode_loop(logits, step, max_new_tokens, sampling, generator, eos_id, on_step)
    return [row.tolist() for row in out]


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


def _all_pos(pad: torch.Tensor) -> torch.Tensor:
    """Per-row positions (B, S) of a left-padded batch whose padding mask is pad (B, S)."""
    n_pad = pad.sum(1, keepdim=True)
    return (torch.arange(pad.shape[1], device=pad.device)[None, :] - n_pad).clamp(min=0)


def _cut(ids: list[int], tokenizer, stop: list[str], eos_id) -> tuple[str, list[int], str]:
    """Decode a row's new ids; end it at eos or the first stop string."""
    reason = "length"
    if eos_id is not None and eos_id in ids:
        ids, reason = ids[: ids.index(eos_id)], "eos"
    text = tokenizer.decode(ids)
    hits = [text.find(s) for s in stop if s and s in text]
    if hits:
        text, reason = text[: min(hits)], "stop"
    return text, ids, reason


def generate(model, tokenizer, prompts: list[str], cfg: GenerationConfig, add_bos: bool = True,
             on_text: Callable[[int, str], None] | None = None,
             encode: Callable[[str], list[int]] | None = None) -> list[Completion]:
    """Text in, completions out: num_samples completions per prompt, in prompt order.
    `encode` turns a prompt into ids (default: the tokenizer, with bos if add_bos; chat.py passes a chat encoder)."""
    family = model.cfg.family
    if family == "seq2seq":  # the prompt is the encoder's input (inference/seq2seq.py)
        if cfg.compile:
            raise ValueError("compile applies to decoder models; seq2seq generation runs eagerly (drop --compile)")
        from llmcycle.inference.seq2seq import generate_seq2seq

        return generate_seq2seq(model, tokenizer, prompts, cfg, on_text)
    if family != "decoder":
        raise ValueError(f"{family} models do not generate text; use `llmcycle fill-mask` for encoder runs")
    if not prompts:
        raise ValueError("no prompts given")
    context = model.cfg.max_seq_len
    encode = encode or (lambda p: tokenizer.encode(p, bos=add_bos and tokenizer.bos_id is not None))
    encoded = [fit_prompt(encode(p), context, cfg.max_new_tokens, cfg.truncate) for p in prompts]
    rows = [ids for ids in encoded for _ in range(cfg.num_samples)]
    generator = seeded_generator(model, cfg.seed)
    eos_id = tokenizer.eos_id if cfg.stop_at_eos else None
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    new = generate_ids(model, rows, cfg.max_new_tokens, cfg.sampling, generator, eos_id, pad_id,
                       cfg.use_cache, text_watcher(tokenizer, cfg, eos_id, len(rows), on_text), cfg.compile)
    return completions(new, tokenizer, cfg, eos_id, prompts)


def seeded_generator(model, seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator(device=next(model.parameters()).device).manual_seed(seed)


def text_watcher(tokenizer, cfg: GenerationConfig, eos_id: int | None, n_rows: int,
                 on_text: Callable[[int, str], None] | None) -> Callable[[torch.Tensor], bool] | None:
    """The per-step callback of `decode_loop`: streams whole characters to on_text and reports when
    every row has hit eos or a stop string. None when neither streaming nor stop strings are asked."""
    if on_text is None and not cfg.stop:
        return None
    streamed = [""] * n_rows
    history: list[list[int]] = [[] for _ in range(n_rows)]

    def on_step(nxt: torch.Tensor) -> bool:
        finished = True
        for r, t in enumerate(nxt.tolist()):
            history[r].append(t)
            text, _, reason = _cut(history[r], tokenizer, cfg.stop, eos_id)
            if on_text is not None and not text.endswith("\ufffd") and len(text) > len(streamed[r]):
                on_text(r, text[len(streamed[r]):])  # stream only whole characters
                streamed[r] = text
            finished &= reason != "length"
        return finished

    return on_step


def completions(new: list[list[int]], tokenizer, cfg: GenerationConfig, eos_id: int | None,
                prompts: list[str]) -> list[Completion]:
    """New ids per row -> Completions cut at eos / the first stop string, num_samples rows per prompt."""
    out = []
    for r, ids in enumerate(new):
        text, ids, reason = _cut(ids, tokenizer, cfg.stop, eos_id)
        out.append(Completion(prompts[r // cfg.num_samples], text, ids, reason))
    return out
