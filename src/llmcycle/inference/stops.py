"""Where a completion ends: at a stop id or before the first stop string. Torch-free; shared by
generation (`decoding.py`) and the evaluation adapters (`evaluation/interface.py`).
"""

from __future__ import annotations

from typing import Container


def cut_at_ids(ids: list[int], stop_ids: Container[int]) -> tuple[list[int], bool]:
    """(the ids before the first stop id, whether one was found)."""
    for i, t in enumerate(ids):
        if t in stop_ids:
            return ids[:i], True
    return ids, False


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """(the text before the earliest stop string, whether one was found); empty stop strings never match."""
    hits = [text.find(s) for s in stop if s and s in text]
    return (text[:min(hits)], True) if hits else (text, False)


def has_stop(text: str, stop: list[str]) -> bool:
    return any(s and s in text for s in stop)
