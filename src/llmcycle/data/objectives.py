"""Training objectives: what a family learns from a window of tokens.

Each objective is a pure, seeded function `(batch (B, T+1) LongTensor, generator) -> dict` of
keyword arguments for the model's forward, including `targets`. The decoder's is the causal
shift; the encoder (masked LM) and encoder-decoder (span corruption) add theirs here.
"""

from __future__ import annotations

from typing import Callable

import torch

Objective = Callable[[torch.Tensor, torch.Generator], dict]


def causal_lm(batch: torch.Tensor, generator: torch.Generator | None = None) -> dict:
    """Next-token prediction: inputs are tokens 0..T-1, targets tokens 1..T."""
    return {"idx": batch[:, :-1], "targets": batch[:, 1:]}


def objective_for(family: str, tokenizer_meta: dict | None = None) -> Objective:
    if family == "decoder":
        return causal_lm
    raise ValueError(f"no training objective for family {family!r} yet")
