"""Scoring continuations in batches: sum log p(continuation tokens), the one implementation every
adapter uses (llmcycle decoder / encoder / seq2seq, Hugging Face causal / seq2seq).

    score_spans(forward, lengths, vocab, spans)   rows grouped under a logits budget, one forward per group,
                                                  each row's spans scored -> (sum log p, n tokens, greedy?)
    causal_loglikelihood(forward, rows, ...)      (context ids, continuation ids) rows with a causal model:
                                                  identical inputs computed once (label words of one token
                                                  share the context's forward pass)
    split_continuation(ctx, full, cont_only)      continuation ids from a joint tokenization

Continuation tokens: a causal model scores `encode(context + continuation)` beyond the tokens of
`encode(context)` (joint tokenization, as lm-evaluation-harness does); when the two disagree at the
boundary, the continuation is encoded on its own and appended.
"""

from __future__ import annotations

from typing import Callable

import torch

from llmcycle.inference.batching import pad_rows

LOGITS_BUDGET = 64 * 2**20  # float32 logits elements per log-likelihood forward (256 MB)

Score = tuple[float, int, bool]  # (sum log p(continuation), its tokens, whether greedy decoding gives it)


def split_continuation(ctx_ids: list[int], full_ids: list[int], cont_only: Callable[[], list[int]]):
    """(context ids, continuation ids) from a joint tokenization, falling back to separate encoding."""
    n = len(ctx_ids)
    if len(full_ids) > n and full_ids[:n] == ctx_ids:
        return ctx_ids, full_ids[n:]
    cont = cont_only()
    if not cont:
        raise ValueError("empty continuation: a choice's answer text encodes to no tokens")
    return ctx_ids, cont


def chunks_by_budget(lengths: list[int], vocab: int) -> list[list[int]]:
    """Row indices, longest first, grouped so each group's padded logits stay under LOGITS_BUDGET elements."""
    groups, cur, cur_max = [], [], 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        m = max(cur_max, lengths[i])
        if cur and m * vocab * (len(cur) + 1) > LOGITS_BUDGET:
            groups.append(cur)
            cur, m = [], lengths[i]
        cur.append(i)
        cur_max = m
    if cur:
        groups.append(cur)
    return groups


def score_spans(forward: Callable[[list[int]], torch.Tensor], lengths: list[int], vocab: int,
                spans: list[list[tuple[int, list[int]]]]) -> list[list[Score]]:
    """forward(row indices) -> logits (B, T, V) of those rows (padded as the caller's model wants);
    spans[i]: (start, target ids) pairs of row i, target token j predicted at position start + j.
    Rows are grouped by `lengths` (their padded length) under LOGITS_BUDGET. Returns the score of
    every span, in order."""
    out: list[list[Score]] = [[] for _ in spans]
    for group in chunks_by_budget(lengths, vocab):
        with torch.inference_mode():
            logits = forward(group)  # (B, T, V)
        for r, i in enumerate(group):
            for start, target in spans[i]:
                lp = logits[r, start:start + len(target)].float().log_softmax(-1).cpu()  # (n, V)
                tgt = torch.tensor(target)
                picked = lp.gather(1, tgt[:, None]).squeeze(1)
                out[i].append((float(picked.sum()), len(target), bool((lp.argmax(-1) == tgt).all())))
    return out


def causal_loglikelihood(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         rows: list[tuple[list[int], list[int]]], max_seq_len: int | None, pad_id: int,
                         vocab: int, device) -> list[Score]:
    """Sum log p(cont | ctx) for (ctx_ids, cont_ids) rows with a causal model.
    forward(idx (B, T) right-padded, real (B, T) bool True at real tokens) -> logits (B, T, V)."""
    inputs, conts = [], []
    for ctx, cont in rows:
        seq = ctx + cont
        if max_seq_len is not None and len(seq) > max_seq_len:
            if len(cont) >= max_seq_len:
                raise ValueError(f"a continuation of {len(cont)} tokens does not fit the {max_seq_len}-token context")
            seq = seq[-max_seq_len:]  # keep the end: the continuation and the nearest context
        inputs.append(tuple(seq[:-1]))
        conts.append(cont)
    unique = list(dict.fromkeys(inputs))  # identical inputs are computed once
    where = {u: i for i, u in enumerate(unique)}
    spans: list[list[tuple[int, list[int]]]] = [[] for _ in unique]
    slot = []  # (unique row, index of the pair's span in that row)
    for inp, cont in zip(inputs, conts):
        u = where[inp]
        slot.append((u, len(spans[u])))
        spans[u].append((len(inp) - len(cont), cont))  # the last len(cont) positions predict the continuation

    def run(group: list[int]) -> torch.Tensor:
        idx, real = pad_rows([list(unique[i]) for i in group], pad_id, left=False)
        return forward(idx.to(device), real.to(device))

    scores = score_spans(run, [len(u) for u in unique], vocab, spans)
    return [scores[u][j] for u, j in slot]
