"""GPU catalogue: memory and dense peak throughput from the vendors' datasheets.

Peaks are *dense* (no 2:4 sparsity; datasheets often print the sparse figure, twice as large)
tensor-core bf16/fp16 with fp32 accumulation, and plain (non-tensor) fp32. Memory is the
datasheet's nominal size; GPU memory chips are binary, so "80 GB" is taken as 80 GiB
(nvidia-smi shows 81920 MiB on an A100 80GB). `usable_bytes` keeps a reserve for the CUDA
context and allocator fragmentation (1 GiB by default; change it with --reserve-gib).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 2**30
GB = 1e9


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float  # nominal datasheet size, binary
    bf16_tflops: float | None  # dense; None: no bf16 support
    fp16_tflops: float
    fp32_tflops: float
    source: str

    def peak_flops(self, dtype: str) -> float:
        key = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dtype, dtype)
        if key not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"no peak throughput for dtype {dtype!r}; choose one of 'bf16', 'fp16', 'fp32'")
        tf = getattr(self, f"{key}_tflops")
        if tf is None:
            raise ValueError(f"{self.name} has no {key} support; use --dtype fp16 or fp32")
        return tf * 1e12

    def usable_bytes(self, reserve_gib: float = 1.0) -> float:
        return (self.memory_gib - reserve_gib) * GIB


GPUS: dict[str, GPU] = {g.name: g for g in (
    GPU("v100-32gb", 32, None, 125.0, 15.7, "NVIDIA V100 datasheet (SXM2): 125 TFLOPS tensor fp16, 15.7 fp32"),
    GPU("a10-24gb", 24, 125.0, 125.0, 31.2, "NVIDIA A10 datasheet: 125 TFLOPS bf16/fp16 dense (250 sparse), 31.2 fp32"),
    GPU("l4-24gb", 24, 121.0, 121.0, 30.3, "NVIDIA L4 datasheet: 242 TFLOPS bf16/fp16 with sparsity, 30.3 fp32"),
    GPU("rtx4090-24gb", 24, 165.2, 165.2, 82.6,
        "NVIDIA Ada Lovelace whitepaper, RTX 4090: 165.2 TFLOPS fp16/bf16 with fp32 accumulate dense, 82.6 fp32"),
    GPU("a100-40gb", 40, 312.0, 312.0, 19.5, "NVIDIA A100 datasheet (SXM): 312 TFLOPS bf16/fp16 dense, 19.5 fp32"),
    GPU("a100-80gb", 80, 312.0, 312.0, 19.5, "NVIDIA A100 datasheet (SXM): 312 TFLOPS bf16/fp16 dense, 19.5 fp32"),
    GPU("l40s-48gb", 48, 362.05, 362.05, 91.6, "NVIDIA L40S datasheet: 362.05 TFLOPS bf16/fp16 dense (733 sparse), 91.6 fp32"),
    GPU("h100-pcie-80gb", 80, 756.5, 756.5, 51.0,
        "NVIDIA H100 datasheet (PCIe): 1,513 TFLOPS bf16/fp16 with sparsity, 51 fp32"),
    GPU("h100-80gb", 80, 989.5, 989.5, 67.0, "NVIDIA H100 datasheet (SXM): 1,979 TFLOPS bf16/fp16 with sparsity, 67 fp32"),
    GPU("h100-nvl-94gb", 94, 835.5, 835.5, 60.0, "NVIDIA H100 datasheet (NVL): 1,671 TFLOPS bf16/fp16 with sparsity, 60 fp32"),
    GPU("h200-141gb", 141, 989.5, 989.5, 67.0, "NVIDIA H200 datasheet (SXM): 1,979 TFLOPS bf16/fp16 with sparsity, 67 fp32"),
)}
ALIASES = {"v100": "v100-32gb", "a10": "a10-24gb", "l4": "l4-24gb", "rtx4090": "rtx4090-24gb", "4090": "rtx4090-24gb",
           "a100": "a100-80gb", "a100-40": "a100-40gb", "a100-80": "a100-80gb", "h100": "h100-80gb", "h200": "h200-141gb",
           "l40s": "l40s-48gb", "h100-pcie": "h100-pcie-80gb", "h100-nvl": "h100-nvl-94gb"}
# CUDA device names (torch.cuda.get_device_name, e.g. "NVIDIA H100 80GB HBM3") -> catalogue; first match wins
DEVICE_NAMES = ((r"H200", "h200-141gb"), (r"H100 NVL", "h100-nvl-94gb"), (r"H100 PCIe", "h100-pcie-80gb"),
                (r"H100", "h100-80gb"), (r"A100.*40GB", "a100-40gb"), (r"A100", "a100-80gb"), (r"L40S", "l40s-48gb"),
                (r"\bL4\b", "l4-24gb"), (r"\bA10\b", "a10-24gb"), (r"V100", "v100-32gb"), (r"RTX 4090", "rtx4090-24gb"))


def get_gpu(name: str) -> GPU:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in GPUS:
        raise ValueError(f"unknown GPU {name!r}; choose one of: {', '.join(GPUS)}")
    return GPUS[key]


def gpu_for_device(device_name: str) -> GPU | None:
    """The catalogue entry for a CUDA device name, or None for a GPU the catalogue lacks."""
    return next((GPUS[key] for pattern, key in DEVICE_NAMES if re.search(pattern, device_name, re.I)), None)
