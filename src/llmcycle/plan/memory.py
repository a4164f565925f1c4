"""Memory: bytes for inference (weights, KV cache, overhead) and training (weights, gradients,
optimizer states, activations) per device under data/tensor/pipeline parallelism and ZeRO/FSDP.

All results are bytes (ints or floats); `tables.py` prints them in GB (1e9 bytes) and GiB (2^30).
Sources are named at each formula; `../shared/reference/planner.md` lists them.
"""

from __future__ import annotations

import math

from llmcycle.plan.shape import ModelShape

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 0.5}
DTYPE_ALIASES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "half": "fp16", "float": "fp32"}
TRAIN_DTYPES = ("fp32", "bf16", "fp16")  # bf16/fp16: mixed precision with an fp32 master copy
# Optimizer state bytes per parameter, excluding the fp32 master copy (EleutherAI, "Transformer Math 101"):
# AdamW keeps two fp32 moments (8), 8-bit Adam two 1-byte moments (2), SGD with momentum one fp32 buffer (4).
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adam8bit": 2, "sgd": 4}
OPTIMIZER_ALIASES = {"adam": "adamw", "adam-8bit": "adam8bit", "sgd-momentum": "sgd", "bnb-adam8bit": "adam8bit"}
MASTER_COPY_BYTES = 4
STRATEGIES = ("ddp", "zero1", "zero2", "zero3")
STRATEGY_ALIASES = {"dp": "ddp", "zero0": "ddp", "fsdp-full": "zero3", "fsdp": "zero3", "full_shard": "zero3",
                    "fsdp-grad-op": "zero2", "shard_grad_op": "zero2"}
RECOMPUTE = ("none", "selective", "full")
# The course's rule of thumb (planner.md): training at fp32 with Adam also needs ~8 bytes/param for
# activations and temporaries, a high-end estimate: 4 + 8 + 4 + 8 = ~24 bytes/param.
COURSE_ACTIVATION_BYTES_PER_PARAM = 8
INFERENCE_OVERHEAD = 0.2  # EleutherAI: ~1.2 x the weights; HF accelerate counts weights only, notes up to ~20% more


def dtype_bytes(dtype: str) -> float:
    key = DTYPE_ALIASES.get(dtype, dtype)
    if key not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[key]


def _norm(name: str, value: str, valid: tuple, aliases: dict) -> str:
    key = aliases.get(value, value)
    if key not in valid:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(valid + tuple(aliases))}")
    return key


def strategy_name(s: str | int) -> str:
    return _norm("strategy", f"zero{s}" if isinstance(s, int) else s, STRATEGIES, STRATEGY_ALIASES)


# ------------------------------------------------------------------ inference


def weight_bytes(n_params: float, dtype: str = "bf16") -> float:
    return n_params * dtype_bytes(dtype)


def kv_cache_bytes(s: ModelShape, batch: int, seq: int, dtype: str = "bf16", tp: int = 1, enc_seq: int | None = None) -> float:
    """2 (K and V) x layers x KV heads x head_dim x seq x batch x bytes (planner.md); heads split over tp.
    Encoder-only models keep no cache; encoder-decoder keeps self-attention over `seq` and
    cross-attention over the encoder's `enc_seq` in every decoder layer."""
    if s.family == "encoder":
        return 0.0
    heads = math.ceil(s.kv_heads / tp)  # fewer KV heads than ranks: each rank keeps a replica
    per_pos = 2 * heads * s.hd * batch * dtype_bytes(dtype)
    if s.family == "seq2seq":
        return per_pos * s.dec_layers * (seq + (enc_seq or seq))
    return per_pos * s.n_layer * seq


def inference_memory(s: ModelShape, n_params: float, dtype: str = "bf16", batch: int = 1, seq: int | None = None,
                     tp: int = 1, overhead: float = INFERENCE_OVERHEAD, kv_dtype: str | None = None) -> dict:
    """Per-device bytes to serve: weights/tp + KV cache + overhead x weights (activations, buffers, CUDA context)."""
    if tp < 1:
        raise ValueError(f"tp must be >= 1, got {tp}")
    w = weight_bytes(n_params, dtype) / tp
    kv = kv_cache_bytes(s, batch, seq or s.max_seq_len, kv_dtype or (dtype if dtype_bytes(dtype) >= 2 else "bf16"), tp)
    return {"weights": w, "kv_cache": kv, "overhead": overhead * w, "total": w + kv + overhead * w}


# ------------------------------------------------------------------ training: model states


def model_state_bytes_per_param(dtype: str = "bf16", optimizer: str = "adamw", grad_dtype: str | None = None) -> dict:
    """Bytes per parameter for weights, gradients and optimizer.

    fp32: 4 + 4 + states. Mixed precision (bf16/fp16) as in ZeRO (Rajbhandari et al. 2020, sec. 3.1):
    16-bit weights (2) and gradients (2), optimizer K = fp32 master copy (4) + states; K = 12 for Adam.
    `grad_dtype`: the gradients' precision (`grad_bytes_per_param`); None: the training dtype."""
    dtype = _norm("training dtype", DTYPE_ALIASES.get(dtype, dtype), TRAIN_DTYPES, {})
    opt = _norm("optimizer", optimizer, tuple(OPTIMIZER_STATE_BYTES), OPTIMIZER_ALIASES)
    w = dtype_bytes(dtype)
    master = 0 if dtype == "fp32" else MASTER_COPY_BYTES
    return {"weights": w, "grads": grad_bytes_per_param(dtype, grad_dtype), "optimizer": master + OPTIMIZER_STATE_BYTES[opt]}


# ------------------------------------------------------------------ gradient precision (added for issue 15)


GRAD_DTYPES = ("fp32", "bf16", "fp16")


def grad_bytes_per_param(dtype: str = "bf16", grad_dtype: str | None = None) -> float:
    """Bytes of one gradient. None: the training dtype (ZeRO's accounting, PyTorch autocast/FSDP with
    param dtype = reduce dtype). "fp32": Megatron-LM accumulates and all-reduces gradients in a fp32
    `main_grad` buffer (--accumulate-allreduce-grads-in-fp32, the default with bf16) and DeepSpeed's
    bf16 optimizer keeps fp32 gradient accumulation: with bf16 weights and Adam that is 2 + 4 + 12 =
    18 bytes/param instead of ZeRO's 16 (Megatron-LM docs, distributed optimizer: "bf16 param, fp32
    grads": 18, or 6 + 12/d sharded)."""
    dtype = DTYPE_ALIASES.get(dtype, dtype)
    if grad_dtype is None:
        return dtype_bytes(dtype)
    g = _norm("gradient dtype", DTYPE_ALIASES.get(grad_dtype, grad_dtype), GRAD_DTYPES, {})
    if dtype_bytes(g) < dtype_bytes(dtype):
        raise ValueError(f"--grad-dtype {grad_dtype} is narrower than the training dtype {dtype}; "
                         f"gradients are kept at least at the weights' precision (choose {dtype} or fp32)")
    return dtype_bytes(g)


def model_state_bytes(n_params: float, dtype: str = "bf16", optimizer: str = "adamw", strategy: str | int = "ddp",
                      dp: int = 1, tp: int = 1, pp: int = 1, grad_dtype: str | None = None) -> dict:
    """Per-device weights/grads/optimizer bytes. Tensor and pipeline parallelism split the model
    tp x pp ways; ZeRO then shards over the data-parallel degree dp (ZeRO paper, Figure 1):
    ZeRO-1 the optimizer states, ZeRO-2 (= FSDP SHARD_GRAD_OP) also gradients, ZeRO-3
    (= FSDP FULL_SHARD) also the weights."""
    for name, v in (("dp", dp), ("tp", tp), ("pp", pp)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer number of GPUs, got {v!r}")
    stage = STRATEGIES.index(strategy_name(strategy))
    per = model_state_bytes_per_param(dtype, optimizer, grad_dtype)
    psi = n_params / (tp * pp)
    shard = {"optimizer": stage >= 1, "grads": stage >= 2, "weights": stage >= 3}
    out = {k: per[k] * psi / (dp if shard[k] else 1) for k in ("weights", "grads", "optimizer")}
    out["total"] = sum(out.values())
    return out


# ------------------------------------------------------------------ training: activations


def korthikanti_layer_bytes(s: int, b: int, h: int, a: int, t: int = 1, sp: bool = False, recompute: str = "none") -> float:
    """Activation bytes per transformer layer at 16-bit, verbatim from Korthikanti et al. 2022, Table 2
    (GPT: multi-head attention, 4h GELU MLP, dropout, attention scores materialised)."""
    recompute = _norm("recompute", recompute, RECOMPUTE, {})
    if recompute == "full":
        return 2 * s * b * h
    scores = 0 if recompute == "selective" else 5 * a * s / h
    if t == 1:
        return s * b * h * (34 + scores)
    if sp:
        return s * b * h * (34 / t + scores / t)
    return s * b * h * (10 + 24 / t + scores / t)


def _attention_terms(sh: ModelShape, s_q: int, s_k: int, b: int, e: float, flash: bool, dropout: bool,
                     recompute: str) -> tuple[float, float]:
    """(replicated, tp-sharded) bytes of one attention sub-block, Korthikanti's accounting generalised to
    GQA and any head_dim: input e*sbh | Q, K, V | scores: softmax e*a*s^2*b + dropout mask + output
    (flash kernels keep only a fp32 logsumexp, 4*a*s*b) | out-proj input | dropout mask sbh."""
    h, a = sh.d_model, sh.n_head
    rep = e * s_q * b * h + (s_q * b * h if dropout else 0)
    shard = e * b * (s_q * sh.q_dim + 2 * s_k * sh.kv_dim) + e * s_q * b * sh.q_dim
    if recompute == "selective":  # the attention core is recomputed: nothing of it is kept
        pass
    elif flash:
        shard += 4 * a * s_q * b
    else:
        shard += a * s_q * s_k * b * (e + (1 + e if dropout else 0))
    return rep, shard


def _mlp_terms(sh: ModelShape, s: int, b: int, e: float, dropout: bool) -> tuple[float, float]:
    """Input e*sbh (+ dropout mask) | activation input and output e*sbf each; gated: gate and up (2f),
    activation output (f) and the product (f)."""
    rep = e * s * b * sh.d_model + (s * b * sh.d_model if dropout else 0)
    return rep, e * s * b * sh.ffn * (4 if sh.gated else 2)


def layer_activation_bytes(sh: ModelShape, seq: int, batch: int, bytes_per_el: float = 2, tp: int = 1, sp: bool = False,
                           recompute: str = "none", flash: bool = True, dropout: bool = False,
                           cross_seq: int | None = None) -> float:
    """Activation bytes of one layer (Korthikanti et al. 2022, Table 2, generalised). With
    flash=False, dropout=True and a GPT shape this equals `korthikanti_layer_bytes` exactly.
    cross_seq: encoder length, for a seq2seq decoder layer (adds a cross-attention sub-block)."""
    recompute = _norm("recompute", recompute, RECOMPUTE, {})
    e, s, b = bytes_per_el, seq, batch
    if recompute == "full":  # only the layer input is kept (Table 2: 2sbh at 16-bit)
        return e * s * b * sh.d_model / (tp if sp else 1)
    parts = [_attention_terms(sh, s, s, b, e, flash, dropout, recompute), _mlp_terms(sh, s, b, e, dropout)]
    if cross_seq:
        parts.append(_attention_terms(sh, s, cross_seq, b, e, flash, dropout, recompute))
    norms = len(parts) * e * s * b * sh.d_model  # the input of each norm
    rep = norms + sum(p[0] for p in parts)
    shard = sum(p[1] for p in parts)
    return (rep / tp if sp else rep) + shard / tp


def output_activation_bytes(sh: ModelShape, seq: int, batch: int, bytes_per_el: float = 2, tp: int = 1) -> float:
    """Final norm input and head input (e*sbh each) and fp32 logits for the loss, 4*s*b*V/t
    (Korthikanti et al. 2022, sec. 4.3)."""
    return 2 * bytes_per_el * seq * batch * sh.d_model + 4 * seq * batch * sh.vocab_size / tp


def activation_bytes(sh: ModelShape, seq: int, batch: int, bytes_per_el: float = 2, tp: int = 1, sp: bool = False,
                     recompute: str = "none", flash: bool = True, dropout: bool = False, dec_seq: int | None = None,
                     eager: bool = False) -> float:
    """All layers' activations on the first pipeline stage. With 1F1B pipelining that stage holds
    pp micro-batches of L/pp layers: L layers' worth whatever pp is (Korthikanti sec. 4.2.3).

    eager (what `training_memory` passes for fp32): plain PyTorch eager training at fp32, as
    `llmcycle train` runs on a CPU, is accounted by what autograd keeps for llmcycle's layers (`llmcycle_activation_bytes`:
    measured within 6% on CPU fp32, bench/plan_vs_measured.py --recompute) instead of Korthikanti's
    table, which describes Megatron's fused 16-bit GPU kernels and leaves out what dominates small
    fp32 models: the loss's fp32 logits and their two gradient buffers, rotary's rotated q and k,
    the eager norms' saved outputs, the block rerun in backward under full recomputation, and
    selective recomputation's op-level policy (matmul and attention outputs kept, the rest rerun).
    It applies where that accounting is derived: flash attention, no dropout, one tensor-parallel
    rank, decoder or encoder; anything else keeps Korthikanti's table."""
    recompute = _norm("recompute", recompute, RECOMPUTE, {})
    if eager and flash and not dropout and tp == 1 and not sp and sh.family != "seq2seq":
        return llmcycle_activation_bytes(sh, seq, batch, bytes_per_el, recompute)["total"]
    kw = dict(bytes_per_el=bytes_per_el, tp=tp, sp=sp, recompute=recompute, flash=flash, dropout=dropout)
    total = sh.n_layer * layer_activation_bytes(sh, seq, batch, **kw)
    if sh.family == "seq2seq":
        dseq = dec_seq or seq
        total += sh.dec_layers * layer_activation_bytes(sh, dseq, batch, cross_seq=seq, **kw)
        return total + output_activation_bytes(sh, dseq, batch, bytes_per_el, tp)
    return total + output_activation_bytes(sh, seq, batch, bytes_per_el, tp)


# ------------------------------------------------------------------ totals, fit, smallest fleet


def training_memory(n_params: float, shape: ModelShape | None = None, *, dtype: str = "bf16", optimizer: str = "adamw",
                    strategy: str | int = "ddp", dp: int = 1, tp: int = 1, pp: int = 1, batch: int = 1,
                    seq: int | None = None, recompute: str = "none", flash: bool = True, sp: bool = False,
                    grad_dtype: str | None = None) -> dict:
    """Per-device training bytes: model states (sharded as the strategy says) + activations for a
    micro-batch of `batch` sequences of `seq` tokens (0 when no shape is known)."""
    states = model_state_bytes(n_params, dtype, optimizer, strategy, dp, tp, pp, grad_dtype)
    act = 0.0
    if shape is not None:
        e = dtype_bytes(dtype)
        act = activation_bytes(shape, seq or shape.max_seq_len, batch, e, tp, sp, recompute, flash,
                               eager=DTYPE_ALIASES.get(dtype, dtype) == "fp32")  # fp32: eager PyTorch's accounting
    out = {k: states[k] for k in ("weights", "grads", "optimizer")}
    out["activations"] = act
    out["total"] = states["total"] + act
    return out


def smallest_dp(n_params: float, shape: ModelShape | None, capacity: float, *, strategy: str | int, **kw) -> int | None:
    """Smallest data-parallel degree whose per-device total fits `capacity` bytes (None: none does).
    Per device = R + S/dp (R replicated, S sharded), so dp = ceil(S / (capacity - R)); plain DDP
    (S = 0) fits at dp=1 or never."""
    t1 = training_memory(n_params, shape, strategy=strategy, dp=1, **kw)["total"]
    t2 = training_memory(n_params, shape, strategy=strategy, dp=2, **kw)["total"]
    sharded = 2 * (t1 - t2)
    replicated = t1 - sharded
    if replicated >= capacity or (sharded <= 0 and t1 > capacity):
        return None
    dp = 1 if sharded <= 0 else max(1, math.ceil(sharded / (capacity - replicated)))
    while training_memory(n_params, shape, strategy=strategy, dp=dp, **kw)["total"] > capacity:
        dp += 1  # float rounding at the boundary
    return dp


def llmcycle_activation_bytes(sh: ModelShape, seq: int, batch: int, bytes_per_el: float = 4,
                              recompute: str = "none") -> dict:
    """What PyTorch autograd keeps for llmcycle's decoder (models/layers.py) in eager fp32, derived by
    listing the saved tensors (torch.autograd.graph.saved_tensors_hooks) and checked in
    tests/test_plan_measure.py; the CPU/fp32 counterpart of Korthikanti's 16-bit table:
      norm + next linear: RMSNorm keeps x, x*rstd and the output (3 e sbh) + rstd; LayerNorm x and output + mean, rstd
      attention (SDPA flash kernel, also on CPU): the fused qkv output (v is a view of it), rotated q and k
        (rope), the output and a fp32 logsumexp (4 b H s); no s x s scores
      MLP: gated 4 e sbf (gate|up, silu output, product); else 2 e sbf; dropout p=0 keeps nothing
      head: fp32 log-softmax output 4 sbV for the loss, plus at the start of backward the caller's logits
        (e sbV) and two sbV fp32 gradient buffers (nll and log-softmax backward): `transient`.
    recompute (ModelConfig.recompute, models/layers.py): "full" keeps each block's input (e sbh) and
      reruns the block in backward, where one block's activations live again (the transient is the
      larger of that and the head's); "selective" keeps the block input and the outputs of every
      matmul (qkv, o, up, down) and of attention (its output and logsumexp), rerunning the rest."""
    if sh.family == "seq2seq":
        raise ValueError("llmcycle's encoder-decoder activations are not derived yet; use activation_bytes (Korthikanti)")
    e, s, b = bytes_per_el, seq, batch
    sb = s * b
    norm = (3 * e * sb * sh.d_model + 4 * sb) if sh.norm == "rmsnorm" else (2 * e * sb * sh.d_model + 8 * sb)
    attn = e * sb * (sh.q_dim + 2 * sh.kv_dim) + e * sb * sh.q_dim + 4 * b * sh.n_head * s
    if sh.pos_emb == "rope":
        attn += e * sb * (sh.q_dim + sh.kv_dim)
    mlp = e * sb * sh.ffn * (4 if sh.gated else 2)
    layer = 2 * norm + attn + mlp
    recompute = _norm("recompute", recompute, RECOMPUTE, {})
    if recompute == "full":
        layers = sh.n_layer * e * sb * sh.d_model
    elif recompute == "selective":
        mm_out = sh.q_dim + 2 * sh.kv_dim + sh.d_model + sh.ffn * (2 if sh.gated else 1) + sh.d_model
        layers = sh.n_layer * (e * sb * (sh.d_model + mm_out + sh.q_dim) + 4 * b * sh.n_head * s)
    else:
        layers = sh.n_layer * layer
    tables = 2 * 4 * s * sh.hd if sh.pos_emb == "rope" else 0
    saved = layers + norm + 4 * sb * sh.vocab_size + tables + 16 * sb  # + final norm, log-softmax, rope tables, ids
    transient = e * sb * sh.vocab_size + 2 * 4 * sb * sh.vocab_size
    if recompute == "full":
        transient = max(transient, layer)
    return {"saved": saved, "transient": transient, "total": saved + transient}


# ------------------------------------------------------------------ fine-tuning: LoRA next to full

LORA_TARGETS = ("qkv_proj", "o_proj", "up_proj", "down_proj")  # llmcycle's default (finetune/lora.py)
ADAPTER_BYTES_PER_PARAM = 4 + 4 + 8  # adapters stay fp32 (as peft keeps them): weight, gradient, AdamW moments


def lora_linear_dims(sh: ModelShape) -> dict[str, tuple[int, int]]:
    """(in, out) of each Linear a LoRA target may name, per block: llmcycle's fused names and the
    Hugging Face (Llama) names, so a plan of either kind of model can name its own layers."""
    d, q, kv, f = sh.d_model, sh.q_dim, sh.kv_dim, sh.ffn
    return {"qkv_proj": (d, q + 2 * kv), "o_proj": (q, d), "up_proj": (d, f * (2 if sh.gated else 1)),
            "down_proj": (f, d), "q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "gate_proj": (d, f)}


def lora_params(sh: ModelShape, rank: int, targets: tuple[str, ...] | list[str] = LORA_TARGETS) -> int:
    """Adapter parameters: r x (in + out) for every targeted Linear of every block (Hu et al. 2021)."""
    dims = lora_linear_dims(sh)
    unknown = [t for t in targets if t not in dims]
    if unknown:
        raise ValueError(f"LoRA targets {unknown} are not Linear layers the planner knows; choose among {', '.join(dims)}")
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    return sh.n_layer * sum(rank * (dims[t][0] + dims[t][1]) for t in targets)


def lora_frozen_savings(sh: ModelShape, seq: int, batch: int, targets=LORA_TARGETS, dropout: bool = False,
                        bytes_per_el: float = 4) -> float:
    """Bytes of `llmcycle_activation_bytes` (a full fine-tune's saved tensors) that autograd does not keep
    when the base is frozen, listed from the saved tensors (torch.autograd.graph.saved_tensors_hooks) and
    checked in tests/test_finetune_plan.py: tensors kept only for a weight's gradient. RMSNorm's normalised
    x (x * rstd, for the gain's gradient) of every norm; the first block's first norm, whose input needs no
    gradient, keeps nothing (x and rstd; LayerNorm: x, mean and rstd); the frozen head's input; the
    embedding's token ids; and a frozen Linear's input unless it is adapted (lora_A, or with dropout
    the tensors around it, keep it): the attention and MLP norms' outputs (read by qkv / up) and the MLP's
    activation (read by down); the attention output stays (SDPA keeps it for its own backward).
    `dropout` is accepted for symmetry with the callers; the savings do not depend on it."""
    e, sb, d = bytes_per_el, seq * batch, sh.d_model
    rms = sh.norm == "rmsnorm"
    n_norms = 2 * sh.n_layer + 1
    saved = (n_norms * e * sb * d if rms else 0) + (e * sb * d + (4 if rms else 8) * sb) + e * sb * d + 8 * sb
    kept = set(targets)  # adapted Linears: lora_A keeps its input (with dropout, its input is kept all the same)
    per_layer = 0.0
    if not kept & {"qkv_proj", "q_proj", "k_proj", "v_proj"}:
        per_layer += e * sb * d  # the attention norm's output
    if not kept & {"up_proj", "gate_proj"}:
        per_layer += e * sb * d  # the MLP norm's output
    if "down_proj" not in kept:
        per_layer += e * sb * sh.ffn  # the MLP activation down_proj reads
    return saved + sh.n_layer * per_layer


def lora_training_memory(n_params: float, shape: ModelShape, rank: int, targets=LORA_TARGETS, *, dtype: str = "bf16",
                         base_dtype: str | None = None, batch: int = 1, seq: int | None = None, dropout: bool = False,
                         llmcycle_cpu: bool = False, **act_kw) -> dict:
    """One device's bytes to LoRA-fine-tune: the frozen base at its precision (no gradient, no optimizer
    state), the adapters with their fp32 gradients and AdamW moments, and the activations, which are
    the full fine-tune's (backpropagation still runs through every frozen layer) plus what the adapters
    keep: A's output (r per token) for each adapted Linear, and with adapter dropout its output and mask.
    llmcycle_cpu: activations from `llmcycle_activation_bytes` (eager fp32, what bench/plan_vs_measured.py
    measures) instead of Korthikanti's table."""
    seq = seq or shape.max_seq_len
    n_lora = lora_params(shape, rank, targets)
    e = 4 if llmcycle_cpu else dtype_bytes(dtype)
    if llmcycle_cpu:
        act = llmcycle_activation_bytes(shape, seq, batch, 4)["total"] - lora_frozen_savings(shape, seq, batch, targets,
                                                                                             dropout)
    else:
        act = activation_bytes(shape, seq, batch, e, **act_kw)
    dims = lora_linear_dims(shape)
    # + A's output (B's input); with dropout its output (A's input). llmcycle_cpu: measured, no mask is kept
    # beside it on CPU (tests/test_finetune_plan.py); the generic path keeps Korthikanti's one-byte mask.
    mask = 0 if llmcycle_cpu else 1
    per_token = sum(e * rank + (dims[t][0] * (e + mask) if dropout else 0) for t in targets)
    extra = shape.n_layer * seq * batch * per_token
    out = {"weights": n_params * dtype_bytes(base_dtype or dtype), "adapter_params": n_lora,
           "adapters": n_lora * ADAPTER_BYTES_PER_PARAM, "activations": act + extra}
    out["total"] = out["weights"] + out["adapters"] + out["activations"]
    return out
