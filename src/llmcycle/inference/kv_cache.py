"""A static key/value cache: one preallocated buffer per layer, filled in place.

Preallocating (B, K, max_len, D) per layer avoids a `torch.cat` per token, which is what makes
cached decoding cheap. `KVCache.layer(i)` gives the view a block's attention calls `update` on;
`advance(T)` moves the write position after all layers have seen a step.

`KVCache.at(i, slot)` is the other way in, for a compiled decoding step (`DecoderLM.step`): the
position is a tensor, the keys and values are written with `index_copy_`, and attention sees the
whole buffer (a mask hides the slots not yet written), so every step has the same shapes and one
compiled graph serves the whole generation.
"""

from __future__ import annotations

import torch


class LayerCache:
    def __init__(self, owner: "KVCache", i: int) -> None:
        self.owner, self.i = owner, i

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k, v (B, K, T, D) at the current position; return all (B, K, pos+T, D)."""
        o = self.owner
        start, end = o.pos, o.pos + k.shape[2]
        if end > o.max_len:
            raise ValueError(f"KV cache full: {end} positions needed, {o.max_len} allocated")
        o.k[self.i][:, :, start:end] = k
        o.v[self.i][:, :, start:end] = v
        return o.k[self.i][:, :, :end], o.v[self.i][:, :, :end]


class SlotCache:
    """One layer's buffers (B, K, max_len, D) addressed by a slot tensor: no shape depends on the position."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, slot: torch.Tensor) -> None:
        self.k, self.v, self.slot = k, v, slot

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, K, 1, D) at slot (1,); return the whole buffers (B, K, max_len, D)."""
        self.k.index_copy_(2, self.slot, k)
        self.v.index_copy_(2, self.slot, v)
        return self.k, self.v


class KVCache:
    """Keys and values of every layer for a batch of B sequences, up to max_len positions."""

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch, n_kv_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.layers = [LayerCache(self, i) for i in range(n_layer)]
        self.max_len, self.pos = max_len, 0

    def layer(self, i: int) -> LayerCache:
        return self.layers[i]

    def at(self, i: int, slot: torch.Tensor) -> SlotCache:
        return SlotCache(self.k[i], self.v[i], slot)

    def advance(self, n: int) -> None:
        self.pos += n

    def reorder(self, index: torch.Tensor) -> None:
        """Keep/duplicate batch rows (e.g. several samples from one prefilled prompt)."""
        self.k = [t.index_select(0, index) for t in self.k]
        self.v = [t.index_select(0, index) for t in self.v]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)
