"""Fill-mask for encoder (masked-LM) runs: the top-k candidates for each `<mask>` in a text.

Our tokenizers encode special-token strings found in user text as plain text (see
`data/tokenizer.py`), so a literal `<mask>` (or `<|mask|>`) is found here: the text is split on
it, each piece encoded, and the mask id inserted between the pieces. `encode_marked` does the
same with any id per marker, which the encoder-decoder uses to turn markers into sentinels.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Iterable

import torch

MARKERS = ("<mask>", "<|mask|>")  # what a user may write where a token is hidden
_MARKER_RE = re.compile("|".join(re.escape(m) for m in MARKERS))


def count_markers(text: str) -> int:
    return len(_MARKER_RE.findall(text))


def encode_marked(tok, text: str, fill_ids: Iterable[int]) -> list[int]:
    """Encode `text`, putting the next id of `fill_ids` where each marker is."""
    pieces, fills = _MARKER_RE.split(text), iter(fill_ids)
    ids = tok.encode(pieces[0])
    for piece in pieces[1:]:
        ids += [next(fills)] + tok.encode(piece)
    return ids


@dataclass
class MaskPrediction:
    index: int  # which mask of the text (0 = first)
    position: int  # its token position in the encoded input
    candidates: list[tuple[str, float]]  # (token text, probability), most likely first


def _check(model, tok, text: str) -> None:
    if model.cfg.family != "encoder":
        raise ValueError(f"fill-mask needs an encoder run (--family encoder); this run's model is a {model.cfg.family}")
    if tok.mask_id is None:
        raise ValueError("this run's tokenizer has no mask token, so it cannot fill masks")
    if not count_markers(text):
        raise ValueError("fill-mask needs at least one <mask> in the text, e.g. \"def add(a, b):\\n    return a <mask> b\"")


@torch.inference_mode()
def fill_mask(model, tok, text: str, top_k: int = 5) -> list[MaskPrediction]:
    """The top_k most likely tokens (with probabilities) for every `<mask>` in `text`, in order."""
    _check(model, tok, text)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    ids = encode_marked(tok, text, itertools.repeat(tok.mask_id))
    if len(ids) > model.cfg.max_seq_len:
        raise ValueError(f"the text is {len(ids)} tokens but the model's context is {model.cfg.max_seq_len}; shorten it")
    model.eval()
    device = next(model.parameters()).device
    logits, _ = model(torch.tensor([ids], device=device))  # (1, T, V)
    positions = [i for i, t in enumerate(ids) if t == tok.mask_id]
    probs = logits[0, positions].float().softmax(-1)  # (M, V)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [MaskPrediction(k, pos, [(tok.decode([i]), p) for i, p in zip(ix.tolist(), pr.tolist())])
            for k, (pos, ix, pr) in enumerate(zip(positions, top.indices, top.values))]


def replace_markers(text: str, replacements: Iterable[str]) -> str:
    """`text` with its k-th marker replaced by the k-th replacement (markers left over stay)."""
    it = iter(replacements)
    return _MARKER_RE.sub(lambda m: next(it, m.group(0)), text)


def filled_text(text: str, predictions: list[MaskPrediction]) -> str:
    """`text` with each mask replaced by its most likely candidate."""
    return replace_markers(text, (p.candidates[0][0] for p in predictions))
