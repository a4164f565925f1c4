"""Weight-only int8 / int4 linear layers for faster CPU decoding (`generate --quantize int4`, the benchmark).

Decoding one token at batch 1 reads every weight once and does little arithmetic per byte, so it is
bound by memory traffic: fp32 SmolLM2-135M moves ~540 MB per token. Storing the `nn.Linear` weights
in fewer bits moves less; activations, norms, attention and residuals stay fp32 (a matmul's input
goes to bf16 for the int kernel only).

    int8   per output row, symmetric: w ~= q * s, |q| <= 127. A decoding step (a few rows) uses
           `aten._weight_int8pack_mm`.
    int4   per group of 32 inputs, asymmetric: w ~= q * s + m, 0 <= q <= 15 -- the scheme of
           llama.cpp's Q4_1, so a Q4_1 GGUF's own levels are (up to bf16 rounding of s and m)
           recovered. A decoding step uses `aten._weight_int4pack_mm_for_cpu` (the kernel's packed
           copy); a second, plain nibble copy serves prefill, so int4 weighs as much as int8.

A long multi-token step (prefill) is compute-bound instead: it dequantizes the weight to bf16 and uses
the bf16 GEMM (the row counts where each way wins were measured: INT8_KERNEL_ROWS, INT4_KERNEL_ROWS).
Inside a compiled decoding step (`generate --compile`) an int8 layer is written as plain tensor math
that inductor fuses into one pass over the weight, which beats the kernel there.

Both are approximations, hence opt-in; the fp32 model is what matches transformers exactly. The
token embedding stays fp32 (it is only gathered); a tied output head gets its own quantized copy, in
int8 even for int4: on SmolLM2, 4 bits in the head drop teacher-forced top-1 agreement with fp32 from
99% to 90%. Layers the int4 kernel cannot take (inputs not a multiple of 32, outputs not of 16) get int8.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

KINDS = ("int8", "int4")
GROUP = 32  # int4 group size along the input dimension (llama.cpp's Q4 block)
# Up to these many rows (tokens) the packed kernels beat dequantizing to bf16 and one GEMM; above
# them, prefill-sized inputs, the GEMM wins (bench: 3072x576 weight, one thread; int8 kernel 0.40 vs
# 0.79 ms at 8 rows, 1.56 vs 1.12 at 32; int4 kernel 2.68 vs 3.99 ms at 64, 5.37 vs 5.05 at 128).
INT8_KERNEL_ROWS, INT4_KERNEL_ROWS = 16, 96
FUSED_ROWS = 4  # inside a compiled decoding step: inductor's fused int8 dot (see Int8Linear._matmul)


class _QuantLinear(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._matmul(x.reshape(-1, self.in_features)).to(x.dtype)
        y = y if self.bias is None else y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


class Int8Linear(_QuantLinear):
    """y = x @ (q * s).T + b with q int8 (out, in) and s fp32 (out,)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear)
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # (out,)
        self.register_buffer("qweight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("scale_bf16", scale.to(torch.bfloat16))

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= FUSED_ROWS and torch.compiler.is_compiling():
            # Compiled, inductor turns this into one vectorized pass over the int8 weight (converted in
            # registers, fp32 math): faster than the kernel, whose bf16 conversions make it compute-bound
            # (SmolLM2 int8 decode 42 -> 65 tokens/s; the int4 model's int8 head 3.9 -> ~2.2 ms).
            return (x[:, None, :].float() * self.qweight.float()).sum(-1) * self.scale  # (M, N)
        if x.shape[0] <= INT8_KERNEL_ROWS:  # decode: the kernel reads a quarter of fp32's bytes
            return torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), self.qweight, self.scale_bf16)
        return F.linear(x.to(torch.bfloat16), self.qweight.to(torch.bfloat16) * self.scale_bf16[:, None])


class Int4Linear(_QuantLinear):
    """y = x @ W.T + b with W stored as 4-bit levels q, per-group scale s and minimum m: W = q * s + m."""

    def __init__(self, linear: nn.Linear, group: int = GROUP) -> None:
        super().__init__(linear)
        w = linear.weight.detach().float()
        n, k = w.shape
        g = w.view(n, k // group, group)
        lo, hi = g.amin(-1), g.amax(-1)  # (n, k/group)
        scale = ((hi - lo) / 15).clamp(min=1e-8)
        q = torch.round((g - lo[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32).view(n, k)
        self.group = group
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1))
        q8 = q.to(torch.uint8).view(n, k // 2, 2)
        self.register_buffer("nibbles", q8[..., 0] | (q8[..., 1] << 4))  # (n, k/2): even inputs low, odd high
        # the kernel computes (q - 8) * scale + zero, so zero = m + 8 * scale; layout (k/group, n, 2)
        sz = torch.stack([scale, lo + 8 * scale], -1).transpose(0, 1).contiguous()
        self.register_buffer("scales_zeros", sz.to(torch.bfloat16))

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= INT4_KERNEL_ROWS:
            return torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), self.packed, self.group,
                                                             self.scales_zeros)
        return F.linear(x.to(torch.bfloat16), self.dequantized().to(torch.bfloat16))

    def dequantized(self) -> torch.Tensor:
        """The fp32 weight (out, in) these levels stand for: q * s + m."""
        n, k = self.out_features, self.in_features
        q = torch.stack((self.nibbles & 15, self.nibbles >> 4), -1).view(n, k // self.group, self.group)
        sz = self.scales_zeros.float().transpose(0, 1)  # (n, k/group, 2): scale, m + 8 * scale
        # each (n, k/group, 1), laid out along the weight's rows: one pass, ~10x faster than strided
        scale, zero = sz[..., :1].contiguous(), sz[..., 1:].contiguous()
        return torch.addcmul(zero - 8 * scale, q.float(), scale).view(n, k)


def quantize_weights(model: nn.Module, kind: str = "int8") -> nn.Module:
    """Replace every nn.Linear of `model` (in place) by an int8 or int4 weight-only layer (CPU); returns it."""
    if kind not in KINDS:
        raise ValueError(f"quantization {kind!r} is not supported; choose one of {', '.join(KINDS)}")
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("weight-only quantization uses CPU kernels; load the model on the CPU")
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                int4 = kind == "int4" and _int4_ok(child) and not (module is model and name == "head")
                setattr(module, name, Int4Linear(child) if int4 else Int8Linear(child))
    return model


def _int4_ok(linear: nn.Linear) -> bool:
    return linear.in_features % GROUP == 0 and linear.out_features % 16 == 0  # the int4 kernel's layout


def weight_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers, each shared tensor counted once."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total
