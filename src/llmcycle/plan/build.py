"""Build a whole plan as one JSON-ready dict (stable keys, schema `llmcycle.plan/1`, documented in
docs/plan.md): model, inference, training, compute and scaling sections. Bytes are raw bytes in the
dict; `tables.py` renders it as text (GB and GiB side by side), `plot.py` as a PNG.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from llmcycle.plan import compute, memory, scaling
from llmcycle.plan.hardware import GB, GIB, GPUS, get_gpu
from llmcycle.plan.shape import non_embedding_params
from llmcycle.plan.source import ModelInfo

SCHEMA = "llmcycle.plan/1"
INFER_DTYPES = ("fp32", "bf16", "int8", "int4")


@dataclass
class Settings:
    gpu: str = "a100-80gb"
    gpus: int = 8
    dtype: str = "bf16"
    optimizer: str = "adamw"
    strategy: str = "zero1"  # highlighted strategy; every strategy is tabulated
    tp: int = 1
    pp: int = 1
    sp: bool = False
    batch: int = 1  # micro-batch (sequences) per GPU
    seq_len: int | None = None  # training sequence length; None: the run's seq_len, else the model's max_seq_len
    recompute: str = "none"
    flash: bool = True
    tokens: float | None = None
    budget_flops: float | None = None
    mfu: float = 0.4
    price: float | None = None
    unique_tokens: float | None = None
    max_epochs: float = 4.0
    law: str = "chinchilla"
    infer_batch: int = 1
    infer_seq_len: int | None = None  # tokens in the KV cache; None: the model's max_seq_len
    reserve_gib: float = 1.0
    lora_rank: int | None = None  # also plan fine-tuning: full vs LoRA at this rank, one GPU
    lora_targets: tuple[str, ...] | None = None  # None: memory.LORA_TARGETS
    grad_dtype: str | None = None  # None: the training dtype; fp32: Megatron-LM / DeepSpeed fp32 gradients
    inference_tokens: float | None = None  # lifetime inference tokens: the inference-aware optimum (Sardana et al.)

    def validate(self) -> None:
        self.gpu = get_gpu(self.gpu).name  # canonical name: "h100" -> "h100-80gb"
        memory.model_state_bytes_per_param(self.dtype, self.optimizer, self.grad_dtype)
        self.strategy = memory.strategy_name(self.strategy)
        if self.gpus < 1:
            raise ValueError(f"--gpus must be >= 1, got {self.gpus}")
        if self.gpus % (self.tp * self.pp):
            raise ValueError(f"--gpus {self.gpus} must be a multiple of tp x pp = {self.tp * self.pp}")
        if self.law not in scaling.LAWS:
            raise ValueError(f"unknown scaling law {self.law!r}; choose one of {', '.join(scaling.LAWS)}")
        if self.batch < 1 or self.infer_batch < 1:
            raise ValueError("--batch and --infer-batch must be >= 1")


def _max_seq_len(info: ModelInfo) -> int | None:
    return info.shape.max_seq_len if info.shape else None


def _mem_kw(st: Settings, info: ModelInfo) -> dict:
    return dict(dtype=st.dtype, optimizer=st.optimizer, tp=st.tp, pp=st.pp, batch=st.batch, seq=st.seq_len,
                recompute=st.recompute, flash=st.flash, sp=st.sp, grad_dtype=st.grad_dtype)


def model_section(info: ModelInfo) -> dict:
    sh = info.shape
    return {"name": info.name, "source": info.source, "family": info.family, "params": dict(info.params),
            "params_exact": info.exact, "non_embedding_params": non_embedding_params(sh) if sh else None,
            "shape": sh.to_dict() if sh else None}


def inference_section(info: ModelInfo, st: Settings) -> dict:
    cap = get_gpu(st.gpu).usable_bytes(st.reserve_gib)
    rows = {}
    for dt in INFER_DTYPES:
        if info.shape is None:
            w = memory.weight_bytes(info.n_params, dt) / st.tp
            o = memory.INFERENCE_OVERHEAD * w
            m = {"weights": w, "kv_cache": None, "overhead": o, "total": w + o}
        else:
            m = memory.inference_memory(info.shape, info.n_params, dt, st.infer_batch, st.infer_seq_len, st.tp)
        rows[dt] = {f"{k}_bytes": v for k, v in m.items()} | {"fits": m["total"] <= cap}
    return {"batch": st.infer_batch, "seq": st.infer_seq_len or _max_seq_len(info), "tp": st.tp,
            "overhead_fraction": memory.INFERENCE_OVERHEAD, "kv_dtype": "bf16 (int8/int4 weights keep a 16-bit cache)",
            "gpu": st.gpu, "capacity_bytes": cap, "per_dtype": rows}


def training_section(info: ModelInfo, st: Settings) -> dict:
    dp = st.gpus // (st.tp * st.pp)
    kw = _mem_kw(st, info)
    cap = get_gpu(st.gpu).usable_bytes(st.reserve_gib)
    per = {}
    for strat in memory.STRATEGIES:
        m = memory.training_memory(info.n_params, info.shape, strategy=strat, dp=dp, **kw)
        per[strat] = {f"{k}_bytes": v for k, v in m.items()} | {"fits": m["total"] <= cap}
    min_gpus = {}
    for strat in memory.STRATEGIES:
        min_gpus[strat] = {}
        for name, g in GPUS.items():
            n = memory.smallest_dp(info.n_params, info.shape, g.usable_bytes(st.reserve_gib), strategy=strat, **kw)
            min_gpus[strat][name] = None if n is None else n * st.tp * st.pp
    keep = ("dtype", "optimizer", "tp", "pp", "sp", "batch", "recompute", "flash")
    settings = {k: v for k, v in asdict(st).items() if k in keep}
    settings.update(grad_dtype=st.grad_dtype or st.dtype, dp=dp, gpus=st.gpus, seq=st.seq_len or _max_seq_len(info),
                    highlighted_strategy=st.strategy, activations_known=info.shape is not None)
    out = {"settings": settings, "gpu": st.gpu, "capacity_bytes": cap, "per_device": per, "min_gpus": min_gpus}
    if st.lora_rank:
        out["fine_tuning"] = fine_tuning_section(info, st, cap)
    return out


def fine_tuning_section(info: ModelInfo, st: Settings, cap: float) -> dict:
    """One GPU: full fine-tuning (every weight, its gradient and optimizer state) next to LoRA (frozen base)."""
    if info.shape is None:
        raise ValueError("--lora-rank needs the model's shape (--preset, --hf-config, --run or dims), not just --params")
    kw = dict(batch=st.batch, seq=st.seq_len, recompute=st.recompute, flash=st.flash)
    full = memory.training_memory(info.n_params, info.shape, dtype=st.dtype, optimizer=st.optimizer, strategy="ddp",
                                  dp=1, **kw)
    lora = memory.lora_training_memory(info.n_params, info.shape, st.lora_rank, st.lora_targets or memory.LORA_TARGETS,
                                       dtype=st.dtype, **kw)
    rows = {"full": {"trainable_params": info.n_params, "weights_bytes": full["weights"],
                     "trainable_states_bytes": full["grads"] + full["optimizer"], "activations_bytes": full["activations"],
                     "total_bytes": full["total"]},
            f"lora_r{st.lora_rank}": {"trainable_params": lora["adapter_params"], "weights_bytes": lora["weights"],
                                      "trainable_states_bytes": lora["adapters"], "activations_bytes": lora["activations"],
                                      "total_bytes": lora["total"]}}
    for r in rows.values():
        r["fits"] = r["total_bytes"] <= cap
    return {"rank": st.lora_rank, "targets": list(st.lora_targets or memory.LORA_TARGETS), "gpu": st.gpu, "rows": rows}


def compute_section(info: ModelInfo, st: Settings) -> dict | None:
    if st.tokens is None:
        return None
    f6 = compute.training_flops(info.n_params, st.tokens, info.family)
    seq_len = st.seq_len or _max_seq_len(info)
    fa = compute.flops_per_token(info.shape, seq_len) * st.tokens if info.shape else None
    out = {"tokens": st.tokens, "tokens_per_param": st.tokens / info.n_params, "flops_6nd": f6,
           "flops_with_attention": fa, "mfu": st.mfu, "gpu": st.gpu, "gpus": st.gpus, "price_per_gpu_hour": st.price}
    out.update(compute.run_cost(f6, st.gpu, st.gpus, compute.peak_dtype(st.gpu, st.dtype), st.mfu, st.price))
    return out


def _law_row(law: str, flops: float) -> dict:
    n, d = scaling.optimum(flops, law)
    if law == "kaplan":
        loss = scaling.kaplan_loss_nd(n, d)
    else:
        loss = scaling.get_fit("epoch" if law == "epoch" else "chinchilla").loss(n, d)
    return {"params": n, "tokens": d, "tokens_per_param": d / n, "loss": loss}


def inference_aware(info: ModelInfo, st: Settings) -> dict:
    """Sardana et al. 2023 under the paper's constants: the loss to reach is that of the budget's
    Chinchilla-optimal model, else of this model on --tokens, else of this model trained
    Chinchilla-optimally (the paper's Figure 1 framing); then the N, D with the fewest lifetime FLOPs."""
    fit, n = scaling.SARDANA, info.n_params
    if st.budget_flops:
        basis, (gn, gd) = "the budget's compute-optimal model", fit.optimum(st.budget_flops)
    elif st.tokens:
        basis, gn, gd = "this model on --tokens", n, st.tokens
    else:
        basis, gn, gd = "this model trained compute-optimally", n, scaling.chinchilla_point_for_params(n, fit)["tokens"]
    out = scaling.inference_optimum(fit.loss(gn, gd), st.inference_tokens, fit)
    given = 6 * gn * gd + 2 * gn * st.inference_tokens
    out.update(basis=basis, given_params=gn, given_tokens=gd, given_total_flops=given,
               given_flops_saved=1 - out["total_flops"] / given)
    return out


def scaling_section(info: ModelInfo, st: Settings) -> dict | None:
    flops = st.budget_flops
    if flops is None and st.tokens is None and st.inference_tokens is None:
        return None
    out = {"budget_flops": flops, "budget_pf_days": compute.pf_days(flops) if flops else None,
           "laws": {law: _law_row(law, flops) for law in scaling.LAWS} if flops else None,
           "loss_note": "chinchilla* and kaplan losses are in nats on their papers' datasets (MassiveText, WebText2): "
                        "compare them, don't read them absolutely"}
    if st.tokens is not None:
        n, d = info.n_params, st.tokens
        out["this_model"] = {"params": n, "tokens": d, "tokens_per_param": d / n,
                             "chinchilla_tokens": scaling.TOKENS_PER_PARAM * n,
                             "loss_chinchilla": scaling.CHINCHILLA.loss(n, d), "loss_epoch": scaling.EPOCH.loss(n, d)}
    if st.unique_tokens is not None:
        budget = flops or compute.training_flops(info.n_params, st.tokens, info.family)
        out["data"] = scaling.data_plan(budget, st.unique_tokens, st.law, st.max_epochs)
    if st.inference_tokens is not None:
        out["inference_aware"] = inference_aware(info, st)
    return out


def build_plan(info: ModelInfo, st: Settings) -> dict:
    st.validate()
    if st.seq_len is None and info.train_seq_len:
        st.seq_len = info.train_seq_len
    units = {"bytes": "B", "GB": GB, "GiB": GIB, "flops": "FLOPs", "pf_day_flops": compute.PF_DAY}
    return {"schema": SCHEMA, "units": units, "model": model_section(info), "inference": inference_section(info, st),
            "training": training_section(info, st), "compute": compute_section(info, st),
            "scaling": scaling_section(info, st)}


def json_safe(x):
    """inf/nan are not JSON: None."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
