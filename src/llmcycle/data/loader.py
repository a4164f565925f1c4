"""Deterministic, resumable batches of token windows for 1..N ranks, from one corpus or a mixture.

A split's shards (see `shards`) are memory-mapped and cut into non-overlapping windows of
``seq_len + 1`` tokens (inputs and their next-token targets); windows never cross a shard
boundary, so each shard's tail of fewer than ``seq_len + 1`` tokens goes unused.

Which windows optimizer step ``s`` uses is a pure function, `global_batch_ids(s, ...)`: the
windows are walked through an endless sequence of epochs, each a permutation seeded by
``(seed, epoch)``, and step ``s`` takes positions ``[s*B, (s+1)*B)``. Nothing needs saving to
resume exactly, and the global batch is the same whatever the world size; each rank then takes
its contiguous `rank_share`.

A --mix mixture (see `mixture`) is read through `MixtureWindows`, which lays out a virtual index of
V windows in which source i owns round(w_i * V) slots; slot j of source i is its window j mod n_i
(a small source repeats, i.e. is upsampled) or, when the source has more windows than slots, every
(n_i / slots)-th window (downsampled). `global_batch_ids` then permutes the virtual index per
epoch, so every epoch holds each source at exactly its weight and each batch holds it at that
weight in expectation. `open_windows` picks the right reader; `source_windows` gives each source's
own windows for per-source validation.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from llmcycle.data.shards import check_tokenizer, load_meta, open_shard
from llmcycle.rundir import TOKENIZER

EVAL_STREAM = 0x6576616C  # "eval": keeps the evaluation sample's seed apart from the epochs'
MAX_VIRTUAL_FACTOR = 16  # a mixture's virtual index is at most this many times the windows that exist


class TokenWindows:
    """The windows of one split of a prepared data folder."""

    def __init__(self, data_dir: Path, split: str, seq_len: int) -> None:
        if seq_len <= 0:
            raise ValueError(f"seq_len must be > 0, got {seq_len}")
        meta = load_meta(data_dir)
        if split not in meta["splits"]:
            raise ValueError(f"{data_dir} has no split {split!r}; it has {sorted(meta['splits'])}")
        self.seq_len, self.window = seq_len, seq_len + 1
        dtype = np.dtype(meta["dtype"]).newbyteorder("<")
        shards = meta["splits"][split]["shards"]
        self.shards = [open_shard(data_dir, s["file"], s["tokens"], dtype) for s in shards]
        counts = np.array([len(s) // self.window for s in self.shards], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])  # first window id of each shard
        if self._starts[-1] == 0:
            tokens = sum(len(s) for s in self.shards)
            raise ValueError(
                f"split {split!r} of {data_dir} has {tokens} tokens in shards of at most "
                f"{max((len(s) for s in self.shards), default=0)}, fewer than one window of seq_len+1={self.window}; "
                "lower --seq-len or add data"
            )

    def __len__(self) -> int:
        return int(self._starts[-1])

    def get(self, ids: np.ndarray) -> torch.Tensor:
        """Windows `ids` as a LongTensor of shape (len(ids), seq_len + 1)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"window ids must be in [0, {len(self)}), got {ids.min()}..{ids.max()}")
        shard_of = np.searchsorted(self._starts, ids, side="right") - 1
        out = np.empty((len(ids), self.window), dtype=np.int64)
        for row, (w, s) in enumerate(zip(ids, shard_of)):
            offset = (w - self._starts[s]) * self.window
            out[row] = self.shards[s][offset : offset + self.window]
        return torch.from_numpy(out)


class MixtureWindows:
    """The windows of one split of a mixture, weighted: same interface as `TokenWindows`."""

    def __init__(self, parts: list[tuple[str, TokenWindows, float]]) -> None:
        self.names = [n for n, _, _ in parts]
        self.parts = [w for _, w, _ in parts]
        sizes = np.array([len(w) for w in self.parts], dtype=np.int64)
        weights = np.array([p for _, _, p in parts], dtype=np.float64)
        virtual = min(max(math.ceil(n / p) for n, p in zip(sizes, weights)), MAX_VIRTUAL_FACTOR * int(sizes.sum()))
        self.slots = np.maximum(1, np.round(weights * virtual)).astype(np.int64)
        self.sizes = sizes
        self._starts = np.concatenate([[0], np.cumsum(self.slots)])
        self.seq_len = self.parts[0].seq_len

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Virtual window ids -> (source index, window id within that source)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"window ids must be in [0, {len(self)}), got {ids.min()}..{ids.max()}")
        src = np.searchsorted(self._starts, ids, side="right") - 1
        slot = ids - self._starts[src]
        n, k = self.sizes[src], self.slots[src]
        local = np.where(k >= n, slot % n, slot * n // np.maximum(k, 1))
        return src, local

    def get(self, ids: np.ndarray) -> torch.Tensor:
        """Windows `ids` of the virtual index as a LongTensor of shape (len(ids), seq_len + 1)."""
        src, local = self.locate(ids)
        out = torch.empty(len(src), self.seq_len + 1, dtype=torch.long)
        for i, w in enumerate(self.parts):
            rows = np.nonzero(src == i)[0]
            if rows.size:
                out[torch.from_numpy(rows)] = w.get(local[rows])
        return out


def _mixture(data_dir: Path) -> list[dict]:
    return load_meta(data_dir).get("mixture") or []


def open_windows(data_dir: Path, split: str, seq_len: int) -> TokenWindows | MixtureWindows:
    """`TokenWindows` of a prepared folder, or the weighted `MixtureWindows` of a mixture; refused if
    the tokenizer.json beside them is not the one they were made with (`check_tokenizer`)."""
    check_tokenizer(data_dir, Path(data_dir) / TOKENIZER)
    mix = _mixture(data_dir)
    if not mix:
        return TokenWindows(data_dir, split, seq_len)
    return MixtureWindows([(m["name"], TokenWindows(Path(data_dir) / m["dir"], split, seq_len), m["weight"]) for m in mix])


def source_windows(data_dir: Path, split: str, seq_len: int) -> dict[str, TokenWindows]:
    """Each mixture source's own windows, by name ({} for a single corpus): per-source validation."""
    return {m["name"]: TokenWindows(Path(data_dir) / m["dir"], split, seq_len) for m in _mixture(data_dir)}


@lru_cache(maxsize=4)
def _epoch_permutation(n_windows: int, seed: int, epoch: int) -> np.ndarray:
    perm = np.random.default_rng([seed, epoch]).permutation(n_windows)
    perm.flags.writeable = False  # shared through the cache
    return perm


def global_batch_ids(step: int, batch_size: int, n_windows: int, seed: int) -> np.ndarray:
    """Window ids of optimizer step `step` (all ranks together), shape (batch_size,).

    Epoch e is ``np.random.default_rng([seed, e]).permutation(n_windows)``; step s takes
    positions [s*batch_size, (s+1)*batch_size) of their concatenation, so a batch may straddle
    two epochs and every window is used exactly once per epoch.
    """
    if step < 0 or batch_size <= 0 or n_windows <= 0:
        raise ValueError(f"need step >= 0, batch_size > 0, n_windows > 0; got {step}, {batch_size}, {n_windows}")
    positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    epochs, within = np.divmod(positions, n_windows)
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        sel = epochs == epoch
        out[sel] = _epoch_permutation(n_windows, seed, int(epoch))[within[sel]]
    return out


def rank_share(ids: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous, equal slice of the global batch."""
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} is not in [0, world_size={world_size})")
    if len(ids) % world_size:
        raise ValueError(
            f"batch_size={len(ids)} is not divisible by world_size={world_size}; "
            f"use a --batch-size that is a multiple of {world_size}"
        )
    per = len(ids) // world_size
    return ids[rank * per : (rank + 1) * per]


def eval_ids(n_windows: int, n_batches: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """A fixed evaluation sample: `n_batches` arrays of `batch_size` window ids, same every call.

    Drawn from one seeded permutation without repeats; when the split has fewer than
    ``n_batches * batch_size`` windows the sample wraps around, so windows repeat but every one
    appears and no two counts differ by more than one.
    """
    if n_windows <= 0 or n_batches <= 0 or batch_size <= 0:
        raise ValueError(f"need n_windows, n_batches, batch_size > 0; got {n_windows}, {n_batches}, {batch_size}")
    perm = np.random.default_rng([seed, EVAL_STREAM, 0]).permutation(n_windows)
    sample = np.resize(perm, n_batches * batch_size)
    return list(sample.reshape(n_batches, batch_size))
