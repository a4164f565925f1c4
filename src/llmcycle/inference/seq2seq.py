"""Generation for encoder-decoder (seq2seq) runs: the prompt is the encoder's input.

    input ids (right-padded) -> encode once -> cross-attention keys/values once per input
    decoder: start token -> sample next (every sampling control) -> feed it through a KV cache ...

Each `<mask>` in the input text becomes the next sentinel, as in span corruption, so the model
writes `<|sentinel_0|> span <|sentinel_1|> span ...`; `infill` puts the spans back into the text.
An input with k sentinels needs k spans: a row also ends when the model starts span k + 1.
`use_cache=False` recomputes encoder and decoder for every token: the reference the cached
path is tested against.
"""

from __future__ import annotations

import itertools
from typing import Callable

import torch

from llmcycle.data.objectives import TokenRoles, split_spans
from llmcycle.inference.batching import right_pad
from llmcycle.inference.config import GenerationConfig, SamplingConfig
from llmcycle.inference.decoding import Completion, completions, decode_loop, seeded_generator, text_watcher
from llmcycle.inference.fill_mask import encode_marked, replace_markers
from llmcycle.inference.kv_cache import KVCache

NO_INPUT = "seq2seq generation needs an input: give the text to transform (mark spans to fill with <mask>)"


def encode_input(tok, text: str) -> list[int]:
    """Input text -> encoder ids, the k-th `<mask>` becoming sentinel k."""
    return encode_marked(tok, text, itertools.cycle(tok.sentinel_ids or [tok.mask_id]))


@torch.inference_mode()
def generate_seq2seq_ids(model, inputs: list[list[int]], max_new_tokens: int, sampling: SamplingConfig,
                         generator: torch.Generator | None = None, start_id: int = 0, eos_id: int | None = None,
                         pad_id: int = 0, use_cache: bool = True,
                         on_step: Callable[[torch.Tensor], bool] | None = None,
                         sentinel_ids: list[int] | None = None) -> list[list[int]]:
    """Decode up to max_new_tokens for each input (lists of ids). Returns the new ids per row.
    sentinel_ids: a row whose input holds k of them also ends at sentinel k (past the last span it
    needs); that sentinel is returned as eos_id, so the row reads as finished."""
    if not inputs or any(len(r) == 0 for r in inputs):
        raise ValueError(NO_INPUT)
    model.eval()
    cfg, device = model.cfg, next(model.parameters()).device
    ends = _row_ends(inputs, sentinel_ids, eos_id, device)  # (B, 2) or the plain eos_id
    src, src_pad = right_pad(inputs, pad_id, device)  # (B, S)
    B = src.shape[0]
    memory_kv = model.cross_kv(model.encode(src, src_pad))  # once per input: dec_layers x (k, v)
    max_new_tokens = min(max_new_tokens, cfg.max_seq_len)  # decoder positions 0 .. max_new_tokens-1 are fed
    dec = torch.full((B, 1), start_id, dtype=torch.long, device=device)
    cache = None
    if use_cache:
        dtype = next(model.parameters()).dtype
        cache = KVCache(cfg.dec_layers, B, cfg.kv_heads, cfg.hd, max_new_tokens, device, dtype)
    logits = model.decode(dec, memory_kv, src_pad, cache, last_only=True)  # (B, 1, V)

    def step(nxt: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if use_cache:
            return model.decode(nxt[:, None], memory_kv, src_pad, cache)
        return model(src, torch.cat([dec, out], 1), src_pad=src_pad, last_only=True)[0]  # recompute all

    out = decode_loop(logits, step, max_new_tokens, sampling, generator, ends, on_step)
    rows = [row.tolist() for row in out]
    if torch.is_tensor(ends) and eos_id is not None:  # the extra sentinel ends the row as eos does
        rows = [r[:r.index(end)] + [eos_id] if end in r else r for r, end in zip(rows, ends[:, 1].tolist())]
    return rows


def _row_ends(inputs: list[list[int]], sentinel_ids: list[int] | None, eos_id: int | None, device):
    """(B, 2) ids ending each row: eos and the sentinel after the input's last (-1 where none is
    left or known); eos_id itself when no sentinel ids are given."""
    if not sentinel_ids:
        return eos_id
    known = set(sentinel_ids)
    after = [sentinel_ids[k] if (k := sum(t in known for t in r)) < len(sentinel_ids) else -1 for r in inputs]
    return torch.tensor([[-1 if eos_id is None else eos_id, a] for a in after], device=device)


def _encode_inputs(tok, prompts: list[str], max_seq_len: int, truncate: str) -> list[list[int]]:
    rows = []
    for p in prompts:
        ids = encode_input(tok, p)
        if not ids:
            raise ValueError(NO_INPUT)
        if len(ids) > max_seq_len and truncate != "left":
            raise ValueError(f"input is {len(ids)} tokens but the encoder's context is {max_seq_len}; "
                             f"shorten it or pass --truncate left to keep its last {max_seq_len} tokens")
        rows.append(ids[-max_seq_len:])
    return rows


def generate_seq2seq(model, tok, prompts: list[str], cfg: GenerationConfig,
                     on_text: Callable[[int, str], None] | None = None) -> list[Completion]:
    """Text in, target text out (sentinels kept): num_samples completions per input, in order."""
    if not prompts:
        raise ValueError(NO_INPUT)
    encoded = _encode_inputs(tok, prompts, model.cfg.max_seq_len, cfg.truncate)
    rows = [ids for ids in encoded for _ in range(cfg.num_samples)]
    generator = seeded_generator(model, cfg.seed)
    eos_id = tok.eos_id if cfg.stop_at_eos else None
    roles = TokenRoles.from_tokenizer(tok)
    new = generate_seq2seq_ids(model, rows, cfg.max_new_tokens, cfg.sampling, generator, roles.decoder_start_id,
                               eos_id, tok.pad_id or 0, cfg.use_cache,
                               text_watcher(tok, cfg, eos_id, len(rows), on_text), tok.sentinel_ids)
    return completions(new, tok, cfg, eos_id, prompts)


def infill(tok, prompt: str, target_ids: list[int], mark: tuple[str, str] = ("[[", "]]")) -> str:
    """The input text with its k-th `<mask>` replaced by the k-th generated span, between `mark`s."""
    spans = split_spans(target_ids, tok.sentinel_ids, tok.eos_id)
    return replace_markers(prompt, (mark[0] + tok.decode(s) + mark[1] for s in spans))
