"""The decoding machinery shared by decoder (`generate.py`) and encoder-decoder (`seq2seq.py`) generation.

    decode_loop     sample one token per row at a time until max_new_tokens, every row's end, or a callback
    text_watcher    the per-step callback: streams whole characters, reports when every row has stopped
    completions     new ids per row -> `Completion`s cut at eos / the first stop string
    seeded_generator  a torch.Generator on the model's device, or None when unseeded
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from llmcycle.inference.config import GenerationConfig, SamplingConfig
from llmcycle.inference.sampling import sample_next
from llmcycle.inference.stops import cut_at_ids, cut_at_stop


@dataclass
class Completion:
    prompt: str
    text: str
    tokens: list[int]
    finish_reason: str  # "eos" | "stop" | "length" (max_new_tokens or the context ran out)


def decode_loop(logits: torch.Tensor, step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                max_new_tokens: int, sampling: SamplingConfig, generator: torch.Generator | None,
                eos_id: int | torch.Tensor | None, on_step: Callable[[torch.Tensor], bool] | None) -> torch.Tensor:
    """Sample one token per row at a time. logits (B, 1, V) come from the prefill; step(next ids (B,),
    all new ids (B, n)) returns the next logits. Stops at max_new_tokens, when every row has
    produced its end (eos_id: one id for every row, or a (B, E) tensor of the ids that end each row),
    or when on_step(next ids) returns True. Returns the new ids (B, n).
    The new ids go into one preallocated (B, max_new_tokens) buffer (no growing `torch.cat` per token),
    and without an eos there is no per-token `done` check (no device sync)."""
    B = logits.shape[0]
    out = torch.empty(B, max_new_tokens, dtype=torch.long, device=logits.device)
    done = torch.zeros(B, dtype=torch.bool, device=logits.device) if eos_id is not None else None
    n = 0
    for n in range(1, max_new_tokens + 1):
        nxt = sample_next(logits[:, -1], sampling, generator)  # (B,)
        out[:, n - 1] = nxt
        if done is not None:
            done |= (nxt[:, None] == eos_id).any(-1) if torch.is_tensor(eos_id) else nxt == eos_id
            if bool(done.all()):
                break
        if (on_step is not None and on_step(nxt)) or n == max_new_tokens:
            break
        logits = step(nxt, out[:, :n])
    return out[:, :n]


def seeded_generator(model, seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator(device=next(model.parameters()).device).manual_seed(seed)


def cut_row(ids: list[int], tokenizer, stop: list[str], eos_id: int | None) -> tuple[str, list[int], str]:
    """Decode a row's new ids; end it at eos or the first stop string -> (text, ids kept, finish reason)."""
    reason = "length"
    if eos_id is not None:
        ids, hit = cut_at_ids(ids, (eos_id,))
        reason = "eos" if hit else reason
    text, hit = cut_at_stop(tokenizer.decode(ids), stop)
    return text, ids, "stop" if hit else reason


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
            text, _, reason = cut_row(history[r], tokenizer, cfg.stop, eos_id)
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
        text, ids, reason = cut_row(ids, tokenizer, cfg.stop, eos_id)
        out.append(Completion(prompts[r // cfg.num_samples], text, ids, reason))
    return out
