"""Rows of token ids of different lengths -> one padded batch: the one padding helper.

    pad_rows(rows, pad_id, left)   ids (B, T), real (B, T) True at real tokens
    left_pad(prompts, pad_id)      generation: prompts end together; padding mask and per-row positions
    right_pad(rows, pad_id)        scoring / encoder inputs: rows start together; padding mask
    positions(pad)                 per-row positions of a left-padded batch

Generation pads on the left so every row's next token is at the same slot; scoring pads on the right,
where a causal model's real tokens never attend to the padding after them.
"""

from __future__ import annotations

import torch


def pad_rows(rows: list[list[int]], pad_id: int, left: bool, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ids (B, T) padded on the left (generation) or the right (scoring), real (B, T) bool, True at
    real tokens (Hugging Face's attention_mask is `real.long()`)."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long, device=device)
    real = torch.zeros(len(rows), T, dtype=torch.bool, device=device)
    for i, r in enumerate(rows):
        span = slice(T - len(r), T) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long, device=device)
        real[i, span] = True
    return ids, real


def left_pad(prompts: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                           torch.Tensor]:
    """-> idx (B, T), pad (B, T) True at padding or None if no row is padded, pos (B, T) or (T,)."""
    idx, real = pad_rows(prompts, pad_id, left=True, device=device)
    if bool(real.all()):
        return idx, None, torch.arange(idx.shape[1], device=device)
    pad = ~real
    return idx, pad, positions(pad)


def right_pad(rows: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """-> idx (B, S), pad (B, S) True at padding (None if no row is padded)."""
    idx, real = pad_rows(rows, pad_id, left=False, device=device)
    return idx, None if bool(real.all()) else ~real


def positions(pad: torch.Tensor) -> torch.Tensor:
    """Per-row positions (B, S) of a left-padded batch whose padding mask is pad (B, S)."""
    n_pad = pad.sum(1, keepdim=True)
    return (torch.arange(pad.shape[1], device=pad.device)[None, :] - n_pad).clamp(min=0)
