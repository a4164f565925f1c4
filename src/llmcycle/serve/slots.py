"""The KV cache of a continuous batch: one row per running request, each row at its own position.

`inference/kv_cache.py`'s `KVCache` moves every row of a batch together (one write position, or
one slot tensor for the compiled step). A server's rows do not move together: a request that
arrived later is earlier in its sequence. `BatchCache` keeps per layer one buffer
(rows, K, max_len, D); a request owns a row, and its token at position p lives in column p.

    prefill(row)        a `forward`-style cache for one prompt: writes columns 0..T-1 of that row
    view(B, L)          what `DecoderLM.step` takes for the first B rows and the first L columns:
                        `at(i, slot)` with slot (B, 1) = each row's position writes one column per row
                        (scatter) and returns the (B, K, L, D) buffers; `step`'s `slot_mask` then
                        broadcasts to (B, L), so each row sees exactly its own columns <= its position
    move(src, dst)      a leaving request's row is refilled by the last running one (rows stay 0..B-1)

Columns past a row's position hold a former occupant's keys; the mask hides them, so a row
never needs clearing.
"""

from __future__ import annotations

import torch


class _PrefillLayer:
    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k, self.v = k, v  # (1, K, max_len, D) views of one row

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (1, K, T, D) of the whole prompt -> written to columns 0..T-1, returned as they are."""
        T = k.shape[2]
        if T > self.k.shape[2]:
            raise ValueError(f"prompt of {T} tokens does not fit the server's {self.k.shape[2]}-token slots")
        self.k[:, :, :T] = k
        self.v[:, :, :T] = v
        return k, v


class _Prefill:
    """The `KVCache` interface `DecoderLM.forward` uses (pos, layer(i), advance), for one row."""

    def __init__(self, cache: "BatchCache", row: int) -> None:
        self.pos = 0
        self.layers = [_PrefillLayer(k[row:row + 1], v[row:row + 1]) for k, v in zip(cache.k, cache.v)]

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
        shape = (rows, n_kv_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.rows, self.max_len = rows, max_len

    def prefill(self, row: int) -> _Prefill:
        return _Prefill(self, row)

    def view(self, B: int, L: int) -> _View:
        return _View([t[:B, :, :L] for t in self.k], [t[:B, :, :L] for t in self.v])

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy row src's first `length` columns into row dst."""
        for t in self.k + self.v:
            t[dst, :, :length] = t[src, :, :length]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)
