"""Compute: training FLOPs (6ND and the per-token count with attention), PF-days, GPU-hours,
wall time and cost on a fleet at a model-FLOPs utilisation (MFU).

Sources: Kaplan et al. 2020 (Eq. 2.1-2.2, PF-day), Brown et al. 2020 (GPT-3, Appendix D:
6ND, 3ND for encoder-decoder), Korthikanti et al. 2022 (Eq. 7-8: model vs hardware FLOPs).
"""

from __future__ import annotations

from llmcycle.plan.hardware import get_gpu
from llmcycle.plan.shape import ModelShape, matmul_params, non_embedding_params

PF_DAY = 1e15 * 86_400  # 8.64e19 FLOPs (Kaplan sec. 1.3; GPT-3 Table D.1 caption)


def training_flops(n_params: float, tokens: float, family: str = "decoder") -> float:
    """C = 6 N D: forward 2ND + backward 4ND. Encoder-decoder models pass each token through
    only one stack, about half the parameters: 3 N D (GPT-3 paper, Appendix D, T5 rows)."""
    return (3 if family == "seq2seq" else 6) * n_params * tokens


def kaplan_forward_flops_per_token(s: ModelShape, n_ctx: int | None = None) -> float:
    """Kaplan et al. 2020, Eq. 2.2: C_forward ~= 2N + 2 n_layer n_ctx d_attn (N non-embedding)."""
    return 2 * non_embedding_params(s) + 2 * s.n_layer * (n_ctx or s.max_seq_len) * s.q_dim


def flops_per_token(s: ModelShape, seq: int | None = None, training: bool = True) -> float:
    """Matmul FLOPs per token as FlopCounterMode counts them: forward = 2 x matmul weights (the head
    too) + 4 x seq x H*hd per attention layer (QK^T and AV over the full, unskipped T x T scores);
    training = 3 x forward. For a decoder this is 6N + 12 L H D T per token (PaLM, Korthikanti)."""
    if s.family == "seq2seq":
        return step_flops(s, 1, seq or s.max_seq_len, training=training) / (seq or s.max_seq_len)
    seq = seq or s.max_seq_len
    fwd = 2 * matmul_params(s) + 4 * seq * s.q_dim * s.n_layer
    return 3 * fwd if training else fwd


def step_flops(s: ModelShape, batch: int, seq: int, dec_seq: int | None = None, training: bool = True) -> float:
    """FLOPs of one step on `batch` sequences. seq2seq: the encoder sees `seq` tokens, the decoder
    `dec_seq` (default seq); cross-attention keys/values are projected from the encoder output."""
    if s.family != "seq2seq":
        return batch * seq * flops_per_token(s, seq, training)
    d = dec_seq or seq
    proj = s.d_model * (2 * s.q_dim + 2 * s.kv_dim)
    mlp = (3 if s.gated else 2) * s.d_model * s.ffn
    enc = seq * (2 * s.n_layer * (proj + mlp) + 4 * s.n_layer * seq * s.q_dim)
    cross_kv = 2 * s.d_model * 2 * s.kv_dim  # projected once per encoder token
    cross_q_o = 2 * s.d_model * s.q_dim
    dec = d * (2 * s.dec_layers * (proj + mlp + cross_q_o) + 4 * s.dec_layers * (d + seq) * s.q_dim
               + 2 * s.vocab_size * s.d_model)
    fwd = batch * (enc + dec + seq * s.dec_layers * cross_kv)
    return 3 * fwd if training else fwd


def korthikanti_model_flops(batch: int, seq: int, h: int, layers: int, vocab: int) -> float:
    """Korthikanti et al. 2022, Eq. 7: model FLOPs per iteration 72 B L s h^2 (1 + s/(6h) + V/(12 h L))."""
    return 72 * batch * layers * seq * h**2 * (1 + seq / (6 * h) + vocab / (12 * h * layers))


def korthikanti_hardware_flops(batch: int, seq: int, h: int, layers: int, vocab: int, recompute: str = "selective") -> float:
    """Hardware FLOPs with recomputation: selective recomputes the attention core, Eq. 8 (s/(3h));
    full recomputes every layer's forward: 96 B L s h^2 (1 + s/(6h) + V/(16 h L))."""
    if recompute == "none":
        return korthikanti_model_flops(batch, seq, h, layers, vocab)
    if recompute == "selective":
        return 72 * batch * layers * seq * h**2 * (1 + seq / (3 * h) + vocab / (12 * h * layers))
    if recompute == "full":
        return 96 * batch * layers * seq * h**2 * (1 + seq / (6 * h) + vocab / (16 * h * layers))
    raise ValueError(f"unknown recompute {recompute!r}; choose one of 'none', 'selective', 'full'")


def peak_dtype(gpu: str, train_dtype: str) -> str:
    """The throughput a training precision runs at: fp32, or the 16-bit tensor-core peak (fp16 where
    the GPU has no bf16, e.g. V100)."""
    if train_dtype in ("fp32", "float32"):
        return "fp32"
    return "fp16" if get_gpu(gpu).bf16_tflops is None else ("fp16" if train_dtype in ("fp16", "float16") else "bf16")


def pf_days(flops: float) -> float:
    return flops / PF_DAY


def gpu_seconds(flops: float, gpu: str, dtype: str = "bf16", mfu: float = 0.4) -> float:
    """Seconds of one GPU at `mfu` x its dense peak for `dtype`."""
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu} (typical: 0.3-0.55)")
    return flops / (get_gpu(gpu).peak_flops(dtype) * mfu)


def run_cost(flops: float, gpu: str, n_gpus: int, dtype: str = "bf16", mfu: float = 0.4, price: float | None = None) -> dict:
    """GPU-hours, wall-clock hours/days on `n_gpus`, and cost at `price` per GPU-hour (None: not priced)."""
    if n_gpus < 1:
        raise ValueError(f"--gpus must be >= 1, got {n_gpus}")
    hours = gpu_seconds(flops, gpu, dtype, mfu) / 3600
    return {"flops": flops, "pf_days": pf_days(flops), "gpu_hours": hours, "wall_hours": hours / n_gpus,
            "wall_days": hours / n_gpus / 24, "cost": None if price is None else hours * price}


def flops_from_gpu_hours(hours: float, gpu: str, dtype: str = "bf16", mfu: float = 0.4) -> float:
    return hours * 3600 * get_gpu(gpu).peak_flops(dtype) * mfu
