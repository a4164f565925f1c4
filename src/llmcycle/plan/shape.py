"""`ModelShape`: the few numbers that decide a transformer's size, and its analytic parameter count.

A shape comes from llmcycle's own `ModelConfig`, a Hugging Face `config.json` (decoder, encoder or
encoder-decoder), a named preset (`presets.py`) or raw dimensions. `param_groups(shape)` counts
parameters by group with the closed-form formula (Kaplan et al. 2020, Eq. 2.1, made exact for
biases, norms, GQA, gated MLPs, tied heads and cross-attention); for llmcycle's own models
`count_params` in `models/accounting.py` counts the built model on the meta device and the two
agree exactly (tests/test_plan.py).

No torch import here: the planner answers in well under a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from llmcycle.hub.hf_config import read_hf_config, shape_fields

FAMILIES = ("decoder", "encoder", "seq2seq")
MLPS = ("gelu", "gelu_tanh", "relu", "swiglu", "geglu")  # swiglu/geglu are gated: three matrices
GATED = ("swiglu", "geglu")
POS_EMBS = ("learned", "rope", "alibi", "relative", "xl")  # relative: T5 buckets; xl: Transformer-XL (Gopher)
NORMS = ("layernorm", "rmsnorm")
GROUPS = ("embedding", "position", "attention", "mlp", "norm", "head", "other")


def _choice(name: str, value, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, valid))}")


@dataclass(frozen=True)
class ModelShape:
    """Dimensions of one transformer. Defaults describe a GPT-2/GPT-3 style decoder."""

    n_layer: int  # blocks (the encoder's, for seq2seq)
    d_model: int
    n_head: int
    vocab_size: int
    max_seq_len: int = 2048  # context length in positions (the training sequence length by default)
    n_kv_head: int | None = None  # None: multi-head (= n_head)
    head_dim: int | None = None  # None: d_model // n_head
    d_ff: int | None = None  # MLP hidden size as configured; None: 4 * d_model (`ffn` is the resolved width)
    family: str = "decoder"
    n_decoder_layer: int | None = None  # seq2seq only; None: = n_layer
    mlp: str = "gelu"
    tied: bool = True  # output head shares the token embedding
    pos_emb: str = "learned"
    norm: str = "layernorm"
    attn_bias: bool = True
    mlp_bias: bool = True
    norm_bias: bool = True  # LayerNorm has a bias (ignored for rmsnorm)
    embed_norm: bool = False  # a norm right after the embedding (BLOOM, BERT)
    final_norm: bool = True  # a norm before the head (pre-LN models; BERT is post-LN: False)
    type_vocab: int = 0  # BERT token-type embeddings
    pooler: bool = False  # BERT pooler (dense d x d + bias)
    rel_buckets: int = 32  # T5 relative-position buckets (per head, first layer of each stack)
    name: str = ""

    def __post_init__(self) -> None:
        _choice("family", self.family, FAMILIES)
        _choice("mlp", self.mlp, MLPS)
        _choice("pos_emb", self.pos_emb, POS_EMBS)
        _choice("norm", self.norm, NORMS)
        for f in ("n_layer", "d_model", "n_head", "vocab_size", "max_seq_len"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) <= 0:
                raise ValueError(f"{f} must be a positive integer, got {getattr(self, f)!r}")
        if self.head_dim is None and self.d_model % self.n_head:
            ok = [h for h in range(1, min(self.d_model, 256) + 1) if self.d_model % h == 0]
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}; "
                             f"pick n_head among {ok} or give head_dim")
        if self.n_kv_head is not None and (self.n_kv_head <= 0 or self.n_head % self.n_kv_head):
            ok = [k for k in range(1, self.n_head + 1) if self.n_head % k == 0]
            raise ValueError(f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head}; choose one of {ok}")
        if self.n_decoder_layer is not None and self.family != "seq2seq":
            raise ValueError("n_decoder_layer applies only to family 'seq2seq'")

    # Derived sizes, named once.
    @property
    def hd(self) -> int:
        return self.head_dim or self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def ffn(self) -> int:  # the MLP hidden width, as ModelConfig.ffn
        return self.d_ff or 4 * self.d_model

    @property
    def q_dim(self) -> int:
        return self.n_head * self.hd

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.hd

    @property
    def dec_layers(self) -> int:
        return (self.n_decoder_layer or self.n_layer) if self.family == "seq2seq" else 0

    @property
    def gated(self) -> bool:
        return self.mlp in GATED

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ analytic parameter count


def norm_params(s: ModelShape) -> int:
    return s.d_model * (2 if s.norm == "layernorm" and s.norm_bias else 1)


def attention_params(s: ModelShape) -> int:
    """q (d x H*hd), k and v (d x K*hd each), out (H*hd x d), plus biases. Cross-attention has the same count."""
    weights = s.d_model * (2 * s.q_dim + 2 * s.kv_dim)
    return weights + (s.q_dim + 2 * s.kv_dim + s.d_model if s.attn_bias else 0)


def mlp_params(s: ModelShape) -> int:
    """up (d x f, twice when gated) and down (f x d), plus biases."""
    n_in = 2 if s.gated else 1
    weights = (n_in + 1) * s.d_model * s.ffn
    return weights + (n_in * s.ffn + s.d_model if s.mlp_bias else 0)


def layer_params(s: ModelShape, cross: bool = False) -> dict[str, int]:
    """One pre-norm block: self-attention [+ cross-attention] + MLP, one norm before each."""
    n_sub = 3 if cross else 2
    out = {"attention": attention_params(s) * (2 if cross else 1), "mlp": mlp_params(s), "norm": n_sub * norm_params(s)}
    if s.pos_emb == "xl":  # Transformer-XL relative positions (Gopher/Chinchilla): W_r (d x H*hd) + u, v biases
        out["position"] = s.d_model * s.q_dim + 2 * s.q_dim
    return out


def param_groups(s: ModelShape) -> dict[str, int]:
    """Parameters by group (tied head counted once, in `embedding`) plus 'total'."""
    g = dict.fromkeys(GROUPS, 0)
    g["embedding"] = s.vocab_size * s.d_model + s.type_vocab * s.d_model
    if s.pos_emb == "learned":
        g["position"] += s.max_seq_len * s.d_model
    blocks = [(s.n_layer, False)] + ([(s.dec_layers, True)] if s.family == "seq2seq" else [])
    for n, cross in blocks:
        for k, v in layer_params(s, cross).items():
            g[k] += n * v
    if s.pos_emb == "relative":  # T5: one bucket table per stack (Raffel et al. 2020, sec. 2.1)
        g["position"] += s.rel_buckets * s.n_head * len(blocks)
    stacks = len(blocks)
    g["norm"] += norm_params(s) * ((stacks if s.final_norm else 0) + (1 if s.embed_norm else 0))
    if not s.tied:
        g["head"] = s.vocab_size * s.d_model
    if s.pooler:
        g["other"] = s.d_model * s.d_model + s.d_model
    g["total"] = sum(g[k] for k in GROUPS)
    return g


def non_embedding_params(s: ModelShape) -> int:
    """Kaplan et al. 2020 (sec. 2.1): N excludes token and position embeddings (and the untied head)."""
    g = param_groups(s)
    return g["total"] - g["embedding"] - g["head"] - (s.max_seq_len * s.d_model if s.pos_emb == "learned" else 0)


def matmul_params(s: ModelShape) -> int:
    """Weights in a matmul per token: every linear layer, the head too even when tied (as accounting.py).
    For seq2seq this counts both stacks (use compute.step_flops for exact per-stack FLOPs)."""
    layer = s.d_model * (2 * s.q_dim + 2 * s.kv_dim) + (2 if s.gated else 1) * s.d_model * s.ffn + s.ffn * s.d_model
    cross = s.d_model * (2 * s.q_dim + 2 * s.kv_dim)
    xl = s.d_model * s.q_dim if s.pos_emb == "xl" else 0
    return s.n_layer * (layer + xl) + s.dec_layers * (layer + cross + xl) + s.vocab_size * s.d_model


# ------------------------------------------------------------------ constructors


def from_config(cfg) -> ModelShape:
    """From llmcycle's `ModelConfig` (duck-typed, so no torch import)."""
    return ModelShape(
        n_layer=cfg.n_layer, d_model=cfg.d_model, n_head=cfg.n_head, vocab_size=cfg.vocab_size,
        max_seq_len=cfg.max_seq_len, n_kv_head=cfg.n_kv_head, head_dim=cfg.head_dim, d_ff=cfg.ffn,
        family=cfg.family, n_decoder_layer=cfg.n_decoder_layer if cfg.family == "seq2seq" else None,
        mlp=cfg.mlp, tied=cfg.tie_embeddings, pos_emb=cfg.pos_emb, norm=cfg.norm,
        attn_bias=cfg.bias, mlp_bias=cfg.bias, norm_bias=cfg.bias, name="llmcycle",
    )


def from_dims(**kw) -> ModelShape:
    """Raw dimensions: layers, d_model, heads, vocab (+ any ModelShape field), with friendly aliases."""
    alias = {"layers": "n_layer", "heads": "n_head", "kv_heads": "n_kv_head", "vocab": "vocab_size", "width": "d_model"}
    kw = {alias.get(k, k): v for k, v in kw.items() if v is not None}
    valid = {f.name for f in fields(ModelShape)}
    unknown = sorted(set(kw) - valid)
    if unknown:
        raise ValueError(f"unknown shape fields {unknown}; valid: {sorted(valid)}")
    missing = [k for k in ("n_layer", "d_model", "n_head", "vocab_size") if k not in kw]
    if missing:
        raise ValueError(f"raw dimensions need {missing} (e.g. --layers 12 --d-model 768 --heads 12 --vocab 50257)")
    return ModelShape(**kw)


def from_hf_dict(d: dict, name: str = "") -> ModelShape:
    """From a Hugging Face config dict (its keys are read by `hub/hf_config.py`)."""
    return ModelShape(**shape_fields(d, name))


def from_hf_config(path: str | Path) -> ModelShape:
    """From a Hugging Face `config.json` (a file or a folder holding one)."""
    path = Path(path)
    name = path.name if path.is_dir() else path.parent.name or path.stem
    return from_hf_dict(read_hf_config(path), name=name)
