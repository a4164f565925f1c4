"""The decoding step compiled ahead of time (AOTInductor) for `generate --compile`.

`torch.compile(model.step)` (generate.py's `compiled_step`) still runs Python for every token:
Dynamo's guards, the AOT-autograd wrapper and inductor's Python wrapper, which calls each fused
kernel and each matmul through the dispatcher. For a small model that fixed cost is most of a step.
Here the same `DecoderLM.step` is captured once with `torch.export` and compiled by AOTInductor into
a shared library whose C++ wrapper runs the whole step; the Python left per token is one call.

    step(idx (B, 1), n (1,), base (1,), last (B, 1), pad (B, L), k[i], v[i] (B, K, L, D))
        -> logits (B, 1, V); writes the new keys/values into slot base + n of k[i], v[i] in place

The batch size is fixed per compiled step (quantized layers pick their kernel by row count); the
cache length L is a dynamic dimension, so one build serves every prompt and output length. The
package is written to a temporary directory (never the repository or the run) that is removed once
the package is loaded; the loaded step is built once per model and batch size and kept on the model.
"""

from __future__ import annotations

import tempfile
import weakref
from pathlib import Path

import torch
import torch.nn as nn

from llmcycle.inference.kv_cache import SlotCache


_BUILT: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


class _Buffers:
    """The part of `KVCache` that `DecoderLM.step` uses, over plain lists of per-layer buffers."""

    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor]) -> None:
        self.k, self.v, self.max_len = k, v, k[0].shape[2]

    def at(self, i: int, slot: torch.Tensor) -> SlotCache:
        return SlotCache(self.k[i], self.v[i], slot)


class _Step(nn.Module):
    """`DecoderLM.step` with the slot and positions derived in the graph from one counter n."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx, n, base, last, pad, k, v):
        # new token n (1-based) goes to cache slot base + n, at position last + n of its row
        return self.model.step(idx, last + n, _Buffers(k, v), base + n, pad)


def aot_step(model: nn.Module, batch: int, dtype: torch.dtype):
    """The AOTInductor-compiled step for this model and batch size (built on first use, then kept)."""
    key = (batch, dtype)
    if key not in _BUILT.get(model, {}):
        step = _build(model, batch, dtype)  # (export restores the module's attributes: keep builds apart)
        _BUILT.setdefault(model, {})[key] = step
    return _BUILT[model][key]


def _build(model: nn.Module, B: int, dtype: torch.dtype):
    cfg = model.cfg
    device = next(model.parameters()).device
    L = min(cfg.max_seq_len, 64)  # example length; the exported graph takes any L in [2, max_seq_len]
    kv = [torch.zeros(B, cfg.kv_heads, L, cfg.hd, device=device, dtype=dtype) for _ in range(2 * cfg.n_layer)]
    args = (torch.zeros(B, 1, dtype=torch.long, device=device), torch.ones(1, dtype=torch.long, device=device),
            torch.zeros(1, dtype=torch.long, device=device), torch.zeros(B, 1, dtype=torch.long, device=device),
            torch.zeros(B, L, dtype=torch.bool, device=device), kv[:cfg.n_layer], kv[cfg.n_layer:])
    Ld = torch.export.Dim("L", min=2, max=cfg.max_seq_len)
    per_layer = [{2: Ld}] * cfg.n_layer
    shapes = (None, None, None, None, {1: Ld}, per_layer, per_layer)
    exported = torch.export.export(_Step(model).eval(), args, dynamic_shapes=shapes, strict=False)
    # the package file is only needed while it is loaded (the loader extracts and dlopens it): the
    # temporary directory goes once it is, so repeated builds leave nothing behind in /tmp
    with tempfile.TemporaryDirectory(prefix="llmcycle-aot-") as tmp:
        path = torch._inductor.aoti_compile_and_package(
            exported, package_path=str(Path(tmp) / "step.pt2"), inductor_configs={"realize_opcount_threshold": 0})
        package = torch._inductor.aoti_load_package(path)
    run = getattr(getattr(package, "loader", None), "boxed_run", None)
    if run is None:  # another torch: the package's own call (it flattens the arguments every time)
        return lambda idx, n, base, last, pad, k, v: package(idx, n, base, last, pad, k, v)
    # the flat inputs in the exported order; skips parsing the call spec and pytree (un)flattening per token
    return lambda idx, n, base, last, pad, k, v: run([idx, n, base, last, pad, *k, *v])[0]
