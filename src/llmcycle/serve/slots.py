"""The KV cache of a continuous batch: one row per running request, each row at its own position.

`inference/kv_cache.py`'s `KVCache` moves every row of a batch together (one write position, or
one slot tensor for the compiled step). A server's rows do not move together: a request that
arrived later is earlier in its sequence. `BatchCache` keeps a `KVCache`'s buffers (rows, K, max_len,
D) per layer but addresses them per row: a request owns a row, and its token at position p lives in
column p.

    prefill(r0, lengths)  a `forward`-style cache for n prompts prefilled together, left-padded to
                          T = max(lengths) tokens: prompt i's keys (the last lengths[i] of its T columns)
                          go to columns 0..lengths[i]-1 of row r0 + i; attention sees the padded batch
    view(B, L)            what `DecoderLM.step` takes for the first B rows and the first L columns:
                          `at(i, slot)` with slot (B, 1) = each row's position writes one column per row
                          (scatter) and returns the (B, K, L, D) buffers; `step`'s `slot_mask` then
                          broadcasts to (B, L), so each row sees exactly its own columns <= its position
    move(src, dst)        a leaving request's row is refilled by the last running one (rows stay 0..B-1)

Columns past a row's position hold a former occupant's keys (or a prefill's padding); the mask hides
them, so a row never needs clearing.
"""

from __future__ import annotations

import torch

from llmcycle.inference.kv_cache import KVCache


class _PrefillLayer:
    def __init__(self, k: torch.Tensor, v: torch.Tensor, lengths: list[int]) -> None:
        self.k, self.v, self.lengths = k, v, lengths  # (n, K, max_len, D) views of rows r0..r0+n-1

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (n, K, T, D) of the left-padded prompts -> row i's real columns T-len_i..T-1 are written
        to its cache columns 0..len_i-1; the padded k, v are returned as they are (attention masks the pad)."""
        T = k.shape[2]
        if T > self.k.shape[2]:
            raise ValueError(f"prompt of {T} tokens does not fit the server's {self.k.shape[2]}-token slots")
        for i, n in enumerate(self.lengths):
            self.k[i, :, :n] = k[i, :, T - n:]
            self.v[i, :, :n] = v[i, :, T - n:]
        return k, v


class _Prefill:
    """The `KVCache` interface `DecoderLM.forward` uses (pos, layer(i), advance), for rows r0..r0+n-1."""

    def __init__(self, cache: "BatchCache", r0: int, lengths: list[int]) -> None:
        self.pos = 0
        rows = slice(r0, r0 + len(lengths))
        self.layers = [_PrefillLayer(k[rows], v[rows], lengths) for k, v in zip(cache.k, cache.v)]

    def layer(self, i: int) -> _PrefillLayer:
        return self.layers[i]

    def advance(self, n: int) -> None:
        self.pos += n


class _RowSlots:
    def __init__(self, k: torch.Tensor, v: torch.Tensor, slot: torch.Tensor) -> None:
        self.k, self.v, self.slot = k, v, slot  # (B, K, L, D) views; slot (B, 1)

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (B, K, 1, D): row b's goes to column slot[b]; returns the (B, K, L, D) buffers."""
        index = self.slot.view(-1, 1, 1, 1).expand_as(k)
        self.k.scatter_(2, index, k)
        self.v.scatter_(2, index, v)
        return self.k, self.v


class _View:
    """The first B rows and L columns, in the shape `DecoderLM.step` expects of its cache."""

    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor]) -> None:
        self.k, self.v = k, v
        self.max_len = k[0].shape[2]

    def at(self, i: int, slot: torch.Tensor) -> _RowSlots:
        return _RowSlots(self.k[i], self.v[i], slot)


class BatchCache:
    def __init__(self, n_layer: int, rows: int, n_kv_head: int, head_dim: int, max_len: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        kv = KVCache(n_layer, rows, n_kv_head, head_dim, max_len, device, dtype)  # the one allocation
        self.k, self.v = kv.k, kv.v  # per layer (rows, K, max_len, D)
        self.rows, self.max_len = rows, max_len

    def prefill(self, r0: int, lengths: list[int]) -> _Prefill:
        return _Prefill(self, r0, lengths)

    def view(self, B: int, L: int) -> _View:
        return _View([t[:B, :, :L] for t in self.k], [t[:B, :, :L] for t in self.v])

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy row src's first `length` columns into row dst."""
        for t in self.k + self.v:
            t[dst, :, :length] = t[src, :, :length]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)
