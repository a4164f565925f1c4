"""Training objectives: what a family learns from a window of tokens.

Each objective is a pure, seeded function `(batch (B, W) LongTensor, generator) -> dict` of
keyword arguments for the model's forward, including `targets`. W, the window it consumes, is
`raw_length(objective, seq_len)`: seq_len + 1 for the decoder's causal shift, seq_len for BERT
masking, and for T5 span corruption the longer raw window whose corrupted input is seq_len
tokens. All randomness comes from the explicit CPU `generator`, so one seed gives one batch.

    decoder   causal_lm        idx = w[:-1], targets = w[1:]
    encoder   MaskedLM         idx = w with 15% chosen (80% mask / 10% random / 10% kept), targets there only
    seq2seq   SpanCorruption   idx = w with spans -> sentinels, targets = sentinel + span ..., eos
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from llmcycle.data.tokenizer import MASK, SENTINELS, SPECIAL_TOKENS

Objective = Callable[[torch.Tensor, torch.Generator], dict]


def causal_lm(batch: torch.Tensor, generator: torch.Generator | None = None) -> dict:
    """Next-token prediction: inputs are tokens 0..T-1, targets tokens 1..T."""
    return {"idx": batch[:, :-1], "targets": batch[:, 1:]}


def raw_length(objective: Objective, seq_len: int) -> int:
    """Tokens per window `objective` consumes for a model sequence of seq_len tokens."""
    fn = getattr(objective, "raw_length", None)
    return fn(seq_len) if fn is not None else seq_len + 1


def objective_for(family: str, tokenizer_meta: dict | None = None, cfg=None) -> Objective:
    """The family's objective. tokenizer_meta: data/meta.json's "tokenizer" entry (plus "vocab_size");
    cfg: the ModelConfig whose family-only options (mlm_*, noise_density, mean_span_length) apply."""
    if family == "decoder":
        return causal_lm
    vocab = (tokenizer_meta or {}).get("vocab_size", getattr(cfg, "vocab_size", None))
    roles = TokenRoles.from_meta(tokenizer_meta or {}, vocab)
    if family == "encoder":
        return MaskedLM(roles, *(option(cfg, name) for name in MLM_DEFAULTS))
    if family == "seq2seq":
        return SpanCorruption(roles, *(option(cfg, name) for name in SPAN_DEFAULTS))
    raise ValueError(f"no training objective for family {family!r}; choose decoder, encoder or seq2seq")


# ---------------------------------------------------------------- options and token roles

MLM_DEFAULTS = {"mlm_probability": 0.15, "mlm_mask_fraction": 0.8, "mlm_random_fraction": 0.1}  # BERT
SPAN_DEFAULTS = {"noise_density": 0.15, "mean_span_length": 3.0}  # T5
MAX_REDRAWS = 64  # span layouts drawn per row before placing even spans first-fit around special tokens


def option(cfg, name: str) -> float:
    """A family-only option of a ModelConfig, or its default when unset (None)."""
    value = getattr(cfg, name, None)
    return {**MLM_DEFAULTS, **SPAN_DEFAULTS}[name] if value is None else value


@dataclass(frozen=True)
class TokenRoles:
    """The token ids an objective needs: which are special, the mask, the sentinels, bos/eos/pad."""

    vocab_size: int | None
    special_ids: tuple[int, ...]
    mask_id: int | None
    sentinel_ids: tuple[int, ...]
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None

    @classmethod
    def from_tokenizer(cls, tok) -> "TokenRoles":
        return cls(tok.vocab_size, tuple(sorted(tok.special_ids)), tok.mask_id, tuple(tok.sentinel_ids),
                   tok.bos_id, tok.eos_id, tok.pad_id)

    @classmethod
    def from_meta(cls, meta: dict, vocab_size: int | None = None) -> "TokenRoles":
        """From meta.json's tokenizer entry; ids it omits follow llmcycle's fixed special-token layout."""
        ours = meta.get("kind", "byte") in ("bpe", "byte")
        layout = {t: i for i, t in enumerate(SPECIAL_TOKENS)} if ours else {}
        sentinels = meta.get("sentinel_ids", [layout[t] for t in SENTINELS if t in layout])
        special = set(meta.get("special_ids", layout.values())) | {meta.get(k) for k in ("bos_id", "eos_id", "pad_id")}
        return cls(vocab_size, tuple(sorted(special - {None})), meta.get("mask_id", layout.get(MASK)),
                   tuple(sentinels), meta.get("bos_id"), meta.get("eos_id"), meta.get("pad_id"))

    @property
    def decoder_start_id(self) -> int:
        """The token a seq2seq decoder starts from (T5 uses pad; we use bos when there is one)."""
        return next(i for i in (self.bos_id, self.pad_id, 0) if i is not None)


def _special(x: torch.Tensor, roles: TokenRoles) -> torch.Tensor:
    return torch.isin(x, torch.tensor(roles.special_ids, dtype=x.dtype))  # (B, T) bool


# ---------------------------------------------------------------- encoder: BERT masking


@dataclass(frozen=True)
class MaskedLM:
    """BERT masking (Devlin et al. 2019, sec. 3.1): each non-special token is chosen with
    `probability`; a chosen token is shown as the mask token (`mask_fraction`), as a random
    ordinary token (`random_fraction`) or as itself (the rest). The loss is on chosen positions
    only (targets -100 elsewhere). Every row gets at least one chosen token if it has any."""

    roles: TokenRoles
    probability: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.roles.mask_id is None:
            raise ValueError("the encoder's masked-LM objective needs a tokenizer with a mask token "
                             "(llmcycle's bpe and byte tokenizers have <|mask|>)")
        if not self.roles.vocab_size:
            raise ValueError("the masked-LM objective needs the tokenizer's vocab_size for random replacements")

    def raw_length(self, seq_len: int) -> int:
        return seq_len

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        x = batch.cpu()  # (B, T); drawn on the CPU so the generator decides everything
        B, T = x.shape
        special = _special(x, self.roles)
        chosen = (torch.rand(B, T, generator=generator) < self.probability) & ~special
        scores = torch.rand(B, T, generator=generator).masked_fill(special, -1.0)  # a fallback pick per row
        empty = ~chosen.any(1) & ~special.all(1)
        chosen[empty, scores[empty].argmax(1)] = True
        r = torch.rand(B, T, generator=generator)
        show_mask = chosen & (r < self.mask_fraction)
        show_random = chosen & (r >= self.mask_fraction) & (r < self.mask_fraction + self.random_fraction)
        ordinary = torch.tensor(sorted(set(range(self.roles.vocab_size)) - set(self.roles.special_ids)))
        random_ids = ordinary[torch.randint(len(ordinary), (B, T), generator=generator)]  # (B, T)
        idx = torch.where(show_mask, self.roles.mask_id, torch.where(show_random, random_ids, x))
        targets = torch.where(chosen, x, -100)
        return {"idx": idx.to(batch.device), "targets": targets.to(batch.device)}


# ---------------------------------------------------------------- seq2seq: T5 span corruption


def span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a raw window, fixed per length as in T5's random_spans_noise_mask."""
    n_noise = min(max(round(length * noise_density), 1), length - 1)
    n_spans = max(round(n_noise / mean_span_length), 1)
    return n_noise, min(n_spans, n_noise, length - n_noise)


def span_lengths(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(encoder input, decoder target) lengths for a raw window: each span becomes one sentinel in
    the input; the target is sentinel + span for each span, then eos."""
    n_noise, n_spans = span_counts(length, noise_density, mean_span_length)
    return length - n_noise + n_spans, n_noise + n_spans + 1


def raw_length_for(inputs_length: int, noise_density: float, mean_span_length: float) -> int:
    """T5's compute_input_and_target_lengths: the longest raw window whose corrupted input fits in
    inputs_length, so every example of a batch has the same input and target length (no padding)."""
    length = inputs_length
    while span_lengths(length + 1, noise_density, mean_span_length)[0] <= inputs_length:
        length += 1
    return length


def seq2seq_lengths(cfg, seq_len: int) -> tuple[int, int]:
    """(encoder, decoder) tokens per training example of a seq2seq ModelConfig at seq_len."""
    density, mean = option(cfg, "noise_density"), option(cfg, "mean_span_length")
    return span_lengths(raw_length_for(seq_len, density, mean), density, mean)


def _segments(total: int, n: int, rows: int, generator) -> torch.Tensor:
    """T5's _random_segmentation: (rows, n) positive lengths summing to total, uniformly at random."""
    cut = torch.rand(rows, total - 1, generator=generator).argsort(1) < n - 1  # n-1 cuts among total-1 gaps
    seg = torch.cat([torch.zeros(rows, 1, dtype=torch.long), cut.long().cumsum(1)], 1)  # (rows, total)
    return torch.zeros(rows, n, dtype=torch.long).scatter_add_(1, seg, torch.ones_like(seg))


def t5_noise_mask(rows: int, length: int, n_noise: int, n_spans: int, generator) -> torch.Tensor:
    """T5's random_spans_noise_mask: (rows, length) bool, alternating non-noise / noise spans."""
    interleaved = torch.stack([_segments(length - n_noise, n_spans, rows, generator),
                               _segments(n_noise, n_spans, rows, generator)], 2).view(rows, 2 * n_spans)
    starts = interleaved.cumsum(1)[:, :-1]  # (rows, 2n-1) where each span after the first begins
    indicator = torch.zeros(rows, length, dtype=torch.long).scatter_add_(1, starts, torch.ones_like(starts))
    return indicator.cumsum(1) % 2 == 1


def first_fit_mask(special: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """(L,) bool: spans of `lengths`, left to right, each at the first place free of special tokens."""
    L, mask, start = special.numel(), torch.zeros(special.numel(), dtype=torch.bool), 0
    for n in lengths:
        while start + n <= L and bool(special[start:start + n].any()):
            start += 1
        if start + n > L:
            raise ValueError(f"a window of {L} tokens with {int(special.sum())} special tokens cannot hold "
                             f"{len(lengths)} corrupted spans; lower noise_density or raise seq_len")
        mask[start:start + n], start = True, start + n + 1
    return mask


def _emit(x: torch.Tensor, sentinel: torch.Tensor, first: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per position: its sentinel if a span starts there, then the token if kept -> (B, fixed length)."""
    slots = torch.stack([sentinel, x], 2)  # (B, L, 2)
    return slots[torch.stack([first, keep], 2)].view(x.shape[0], -1)


@dataclass(frozen=True)
class SpanCorruption:
    """T5 span corruption (Raffel et al. 2020, sec. 3.1.4): noise_density of the tokens, in spans of
    mean length mean_span_length, are replaced in the input by one sentinel per span; the target
    lists each sentinel and its span, then eos. Spans never cover special tokens. Counts are fixed
    per window length, so the input has `raw_length`'s target length and every target the same length.
    Sentinel k marks span k (cycling through the tokenizer's sentinels if there are more spans)."""

    roles: TokenRoles
    noise_density: float = 0.15
    mean_span_length: float = 3.0

    def __post_init__(self) -> None:
        if not self.roles.sentinel_ids or self.roles.eos_id is None:
            raise ValueError("span corruption needs a tokenizer with sentinel tokens and eos "
                             "(llmcycle's bpe and byte tokenizers have <|sentinel_0..31|> and <|eos|>)")

    def raw_length(self, seq_len: int) -> int:
        return raw_length_for(seq_len, self.noise_density, self.mean_span_length)

    def noise_mask(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """(B, L) bool: T5 layouts, redrawn for rows where a span would cover a special token."""
        (B, L), special = x.shape, _special(x, self.roles)
        n_noise, n_spans = span_counts(L, self.noise_density, self.mean_span_length)
        mask = t5_noise_mask(B, L, n_noise, n_spans, generator)
        bad = (mask & special).any(1)
        for _ in range(MAX_REDRAWS):
            if not bad.any():
                return mask
            mask[bad] = t5_noise_mask(int(bad.sum()), L, n_noise, n_spans, generator)
            bad = (mask & special).any(1)
        even = [n_noise // n_spans + (k < n_noise % n_spans) for k in range(n_spans)]
        for r in bad.nonzero().flatten().tolist():  # crowded with specials: even spans, placed first-fit
            mask[r] = first_fit_mask(special[r], even)
        return mask

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        x = batch.cpu()  # (B, L) raw windows
        noise = self.noise_mask(x, generator)
        first = noise & ~torch.nn.functional.pad(noise, (1, 0))[:, :-1]  # (B, L) first token of each span
        sentinels = torch.tensor(self.roles.sentinel_ids)
        sentinel = sentinels[(first.long().cumsum(1) - 1).clamp(min=0) % len(sentinels)]  # (B, L)
        inputs = _emit(x, sentinel, first, ~noise)  # (B, L - n_noise + n_spans)
        targets = _emit(x, sentinel, first, noise)  # (B, n_noise + n_spans)
        targets = torch.cat([targets, torch.full((len(x), 1), self.roles.eos_id)], 1)
        dec_idx = torch.cat([torch.full((len(x), 1), self.roles.decoder_start_id), targets[:, :-1]], 1)
        return {k: v.to(batch.device) for k, v in (("idx", inputs), ("dec_idx", dec_idx), ("targets", targets))}


def split_spans(targets: list[int], sentinel_ids, eos_id: int | None) -> list[list[int]]:
    """A target (or a generated one) -> its spans in order: the tokens after each sentinel, up to eos."""
    sentinel_ids, spans = set(sentinel_ids), []
    for t in targets:
        if t == eos_id:
            break
        if t in sentinel_ids:
            spans.append([])
        elif spans:
            spans[-1].append(t)
    return spans


def merge_spans(inputs: list[int], spans: list[list[int]], sentinel_ids) -> list[int]:
    """Put span k where the k-th sentinel of the input is (a missing span leaves the sentinel)."""
    sentinel_ids, out, k = set(sentinel_ids), [], 0
    for t in inputs:
        if t in sentinel_ids:
            out += spans[k] if k < len(spans) else [t]
            k += 1
        else:
            out.append(t)
    return out
