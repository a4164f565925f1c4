"""Predicted vs measured on llmcycle's own models: parameters, training FLOPs per step, peak memory.

- Parameters: analytic `shape.param_groups` vs the model built on the meta device (exact).
- FLOPs: `compute.step_flops` vs `torch.utils.flop_counter.FlopCounterMode` over forward + backward.
- Peak training memory (CPU, fp32): a fresh subprocess per case, so nothing else lives in the heap.
  It imports torch, warms up the kernels on a tiny model, trims the heap and reads the resident set
  (RSS, /proc/self/statm) as the baseline; builds the model and optimizer; runs one step (creates
  gradients and optimizer state), resets the peak (`echo 5 > /proc/self/clear_refs`, which resets
  VmHWM), runs a second step with gradients kept (zero_grad(set_to_none=False)) and reads the peak
  RSS (VmHWM). measured = peak - baseline. glibc is told to mmap every block over 64 KiB
  (MALLOC_MMAP_THRESHOLD_) so freed tensors leave the RSS at once instead of lingering in the heap.
  Predicted = weights + grads + optimizer states + `memory.llmcycle_activation_bytes`.
- CUDA: the same protocol with torch.cuda.max_memory_allocated when a GPU is visible; it says so
  and stops when none is.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

from llmcycle.config import ModelConfig
from llmcycle.plan.compute import step_flops
from llmcycle.plan.memory import llmcycle_activation_bytes, lora_training_memory, model_state_bytes
from llmcycle.plan.shape import from_config, param_groups


@dataclass
class Case:
    model: dict  # ModelConfig fields
    batch: int
    seq_len: int  # training sequence length
    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9)
    lora_rank: int | None = None  # LoRA fine-tuning: adapters of this rank on every block Linear, the base frozen
    lora_dropout: float = 0.0

    def config(self) -> ModelConfig:
        return ModelConfig(**self.model)


def predicted(case: Case) -> dict:
    sh = from_config(case.config())
    n = param_groups(sh)["total"]
    if case.lora_rank:  # frozen base + fp32 adapters with AdamW (their gradients counted with them)
        m = lora_training_memory(n, sh, case.lora_rank, dtype="fp32", batch=case.batch, seq=case.seq_len,
                                 dropout=case.lora_dropout > 0, llmcycle_cpu=True)
        return {"params": n, "flops": step_flops(sh, case.batch, case.seq_len), "weights": m["weights"], "grads": 0.0,
                "optimizer": m["adapters"], "activations": m["activations"], "peak": m["total"]}
    states = model_state_bytes(n, "fp32", case.optimizer)
    act = llmcycle_activation_bytes(sh, case.seq_len, case.batch, 4, case.config().recompute)
    return {"params": n, "flops": step_flops(sh, case.batch, case.seq_len), "weights": states["weights"],
            "grads": states["grads"], "optimizer": states["optimizer"], "activations": act["total"],
            "peak": states["total"] + act["total"]}


def measure_params_flops(case: Case) -> dict:
    """Exact parameter count (meta device) and FlopCounterMode FLOPs of one forward+backward."""
    import torch  # torch only to measure: the predictions above need none

    from llmcycle.models import build_model
    from llmcycle.models.accounting import count_params, measure_flops

    cfg = case.config()
    model = build_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (case.batch, case.seq_len))
    return {"params": count_params(cfg)["total"], "flops": measure_flops(model, idx, idx)}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _step(model, opt, idx, tgt) -> None:
    logits, loss = model(idx, tgt)  # the caller holds the logits through backward, as a loop would
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=False)
    del logits, loss


def _make(case: Case, cfg, device="cpu"):
    import torch  # torch only to measure: the predictions above need none

    from llmcycle.models import build_model

    model = build_model(cfg).to(device)
    if case.lora_rank:
        from llmcycle.finetune.lora import LoraSpec, add_lora  # peft (the hf extra), only for LoRA cases

        add_lora(model, LoraSpec(rank=case.lora_rank, alpha=2.0 * case.lora_rank, dropout=case.lora_dropout))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW(params, lr=1e-4) if case.optimizer == "adamw"
           else torch.optim.SGD(params, lr=1e-4, momentum=0.9))
    idx = torch.randint(0, cfg.vocab_size, (case.batch, case.seq_len), device=device)
    return model, opt, idx, torch.roll(idx, -1, 1)


def _child_cpu(case: Case) -> dict:
    """Runs inside the fresh subprocess."""
    import torch  # torch only in the measuring subprocess

    torch.manual_seed(0)
    torch.set_num_threads(1)
    tiny = Case({**case.model, "n_layer": 1, "d_model": 64, "n_head": 2, "n_kv_head": None, "head_dim": None, "d_ff": None,
                 "vocab_size": 256, "max_seq_len": 32}, 1, 16, case.optimizer, case.lora_rank, case.lora_dropout)
    _step(*_make(tiny, tiny.config()))  # load the kernels' code pages before the baseline
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    base = _rss()
    model, opt, idx, tgt = _make(case, case.config())
    _step(model, opt, idx, tgt)
    states = _rss() - base
    reset = _reset_hwm()
    _step(model, opt, idx, tgt)
    return {"peak": _hwm() - base, "states_after_step": states, "hwm_reset": reset, "method": "rss"}


def measure_cpu_peak(case: Case, timeout: float = 300) -> dict:
    """Peak training memory (bytes) of one steady-state step, in a fresh subprocess (see module doc)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    code = ("import json, sys; from llmcycle.plan.measure import Case, _child_cpu; "
            "print(json.dumps(_child_cpu(Case(**json.loads(sys.argv[1])))))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(asdict(case))], env=env, capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"measurement subprocess failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_cuda_peak(case: Case) -> dict:
    """Same protocol on a GPU: torch.cuda.max_memory_allocated after a reset between steps 1 and 2."""
    import torch  # torch only to measure: the predictions above need none

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU visible: the CUDA measurement (torch.cuda.max_memory_allocated) needs one; "
                           "use measure_cpu_peak on this machine")
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    model, opt, idx, tgt = _make(case, case.config(), "cuda")
    _step(model, opt, idx, tgt)
    torch.cuda.reset_peak_memory_stats()
    _step(model, opt, idx, tgt)
    torch.cuda.synchronize()
    return {"peak": torch.cuda.max_memory_allocated() - base, "method": "cuda.max_memory_allocated"}


def compare(case: Case, device: str = "cpu") -> dict:
    """One row of the predicted-vs-measured table."""
    pred = predicted(case)
    meas = measure_params_flops(case)
    mem = measure_cpu_peak(case) if device == "cpu" else measure_cuda_peak(case)
    return {"case": asdict(case), "predicted": pred, "measured": {**meas, **mem},
            "err_flops": meas["flops"] / pred["flops"] - 1, "err_peak": pred["peak"] / mem["peak"] - 1,
            "params_equal": meas["params"] == pred["params"]}
