"""Typed configs for every stage, saved as JSON in the run directory.

One flat dataclass per concern (nanoGPT's GPTConfig, litgpt's arg groups): `ModelConfig` is
enough to rebuild a model, `DataConfig` to rebuild its token shards, `TrainConfig` to rerun
training. Each validates itself in `__post_init__` and raises `ValueError` with a message that
says what to change. `RunConfig` bundles the three and is what `config.json` holds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmcycle.atomic import atomic_write_text

FAMILIES = ("decoder", "encoder", "seq2seq")
# Options that only one family reads; setting one under another family is a mistake we name.
FAMILY_OPTIONS = {
    "encoder": ("mlm_probability", "mlm_mask_fraction", "mlm_random_fraction"),
    "seq2seq": ("n_decoder_layer", "noise_density", "mean_span_length"),
}


def _choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, valid))}")


def _finite(cfg) -> None:
    """Every number in a config must be a finite number (nan and inf come in through flags like --lr inf)."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{f.name} must be a finite number, got {v}")


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value is None or (value < 0 if allow_zero else value <= 0):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass
class ModelConfig:
    """Architecture of one transformer. Defaults give a small Llama-style decoder.

    The options are enough to express Llama (rope + rmsnorm + swiglu + no bias + GQA) and GPT-2
    (learned positions + layernorm + gelu_tanh + bias + tied embeddings) exactly.
    """

    family: str = "decoder"  # decoder (causal LM) | encoder (masked LM) | seq2seq (span corruption)
    vocab_size: int = 4096  # tokens in the embedding table (set from the tokenizer by prepare)
    n_layer: int = 4  # blocks (the encoder's, for seq2seq)
    n_decoder_layer: int | None = None  # seq2seq only: decoder blocks (None: same as n_layer)
    mlm_probability: float | None = None  # encoder only: fraction of tokens chosen for prediction (None: 0.15)
    mlm_mask_fraction: float | None = None  # encoder only: of the chosen, fraction shown as the mask token (None: 0.8)
    mlm_random_fraction: float | None = None  # encoder only: of the chosen, fraction shown as a random token (None: 0.1)
    noise_density: float | None = None  # seq2seq only: fraction of tokens corrupted into spans (None: 0.15)
    mean_span_length: float | None = None  # seq2seq only: mean length of a corrupted span (None: 3.0)
    d_model: int = 256  # model width (residual stream size)
    n_head: int = 4  # attention (query) heads
    n_kv_head: int | None = None  # grouped-query attention; None: = n_head (multi-head)
    head_dim: int | None = None  # None: d_model // n_head
    d_ff: int | None = None  # MLP hidden size; None: 4*d (gelu) or 8/3*d rounded up to 64 (swiglu)
    max_seq_len: int = 256  # context length (positions)
    pos_emb: str = "rope"  # rope | learned
    rope_base: float = 10000.0  # rotary base frequency (theta)
    rope_scaling: dict | None = None  # Llama-3 style {"rope_type": "llama3", "factor": ..., ...}
    norm: str = "rmsnorm"  # rmsnorm | layernorm
    norm_eps: float = 1e-5  # epsilon inside the norms
    mlp: str = "swiglu"  # swiglu | gelu | gelu_tanh
    bias: bool = False  # biases in linear layers and layernorm
    tie_embeddings: bool = True  # output head shares the token embedding matrix
    dropout: float = 0.0  # dropout on attention, residual branches and embeddings
    init_std: float = 0.02  # std of the normal weight init (residual projections scaled by 1/sqrt(2L))
    recompute: str = "none"  # activation checkpointing in training: none | selective (rerun norms, activations) | full (rerun blocks)

    def __post_init__(self) -> None:
        _finite(self)
        _choice("family", self.family, FAMILIES)
        _choice("pos_emb", self.pos_emb, ("rope", "learned"))
        _choice("norm", self.norm, ("rmsnorm", "layernorm"))
        _choice("mlp", self.mlp, ("swiglu", "gelu", "gelu_tanh"))
        _choice("recompute", self.recompute, ("none", "selective", "full"))
        for name in ("vocab_size", "n_layer", "d_model", "n_head", "max_seq_len", "norm_eps", "init_std"):
            _positive(name, getattr(self, name))
        _positive("rope_base", self.rope_base)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.head_dim is None and self.d_model % self.n_head:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_head={self.n_head}; "
                f"pick n_head among {[h for h in range(1, 65) if self.d_model % h == 0]} or set head_dim"
            )
        if self.n_kv_head is not None and (self.n_kv_head <= 0 or self.n_head % self.n_kv_head):
            raise ValueError(f"n_kv_head={self.n_kv_head} must be > 0 and divide n_head={self.n_head}")
        if self.pos_emb == "rope" and self.hd % 2:
            raise ValueError(f"rotary positions need an even head_dim, got {self.hd}")
        for family, names in FAMILY_OPTIONS.items():
            for name in names:
                if getattr(self, name) is not None and self.family != family:
                    raise ValueError(f"{name} applies only to --family {family} (this config is {self.family!r}); "
                                     "remove it or change the family")
        self._check_objective_options()

    def _check_objective_options(self) -> None:
        for name in ("mlm_probability", "noise_density"):
            if getattr(self, name) is not None and not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        shown = [getattr(self, n) for n in ("mlm_mask_fraction", "mlm_random_fraction")]
        if any(f is not None and not 0.0 <= f <= 1.0 for f in shown) or sum(f or 0.0 for f in shown) > 1.0:
            raise ValueError(f"mlm_mask_fraction and mlm_random_fraction must be in [0, 1] with a sum <= 1 "
                             f"(the rest of the chosen tokens stay as they are), got {shown}")
        if self.mean_span_length is not None and self.mean_span_length < 1.0:
            raise ValueError(f"mean_span_length must be >= 1, got {self.mean_span_length}")

    # Derived sizes, named once so no module recomputes them differently.
    @property
    def hd(self) -> int:
        return self.head_dim or self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def ffn(self) -> int:
        if self.d_ff:
            return self.d_ff
        if self.mlp == "swiglu":
            return 64 * math.ceil(8 * self.d_model / 3 / 64)
        return 4 * self.d_model

    @property
    def dec_layers(self) -> int:
        return self.n_decoder_layer or self.n_layer


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes token shards."""

    source: str = "default"  # "default" (Python stdlib source), a file, a folder, or a .jsonl file
    include: list[str] = field(default_factory=lambda: ["*.py", "*.txt", "*.md", "*.rst"])  # folder globs
    exclude: list[str] = field(default_factory=list)  # folder globs to skip
    text_field: str = "text"  # JSONL field holding the document
    tokenizer: str = "bpe"  # bpe (trained here) | byte (no training) | char (one token per character) | PATH: reuse a tokenizer.json or a run dir's (imported model)
    vocab_size: int = 4096  # BPE vocabulary, specials included
    val_fraction: float = 0.05  # fraction of documents held out, chosen by a seeded hash
    seed: int = 1337  # seeds the train/validation split
    strict: bool = False  # undecodable files raise instead of being skipped
    max_bytes: int | None = None  # stop reading after this many bytes of text (quick runs)
    shard_tokens: int = 50_000_000  # tokens per shard file
    mix: list[str] = field(default_factory=list)  # data mixture, replaces source: [NAME=]SOURCE:WEIGHT ... (e.g. fin.jsonl:0.5 default:0.5)

    def __post_init__(self) -> None:
        _finite(self)
        if self.tokenizer not in ("bpe", "byte", "char") and not (
                "/" in self.tokenizer or self.tokenizer.endswith(".json") or Path(self.tokenizer).exists()):
            raise ValueError(f"tokenizer={self.tokenizer!r} is not valid; choose 'bpe', 'byte', 'char', or the path of a "
                             "tokenizer.json or run directory whose tokenizer to reuse")
        mixture_parts(self.mix)  # validates the entries
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.tokenizer == "bpe" and self.vocab_size < 300:
            raise ValueError(f"vocab_size={self.vocab_size} is too small for BPE; use >= 300 or --tokenizer byte")
        _positive("shard_tokens", self.shard_tokens)
        if self.max_bytes is not None:
            _positive("max_bytes", self.max_bytes)


def mixture_parts(mix: list[str]) -> list[tuple[str, str, float]]:
    """`--mix` entries `[NAME=]SOURCE:WEIGHT` -> [(name, source, weight)], weights normalised to sum to 1.
    NAME (a folder under RUN/data and the label of the per-source validation loss) defaults to the source's stem."""
    parts = []
    for entry in mix:
        name, _, rest = entry.rpartition("=") if "=" in entry.split(":")[0] else ("", "", entry)
        source, _, weight = rest.rpartition(":")
        try:
            w = float(weight)
        except ValueError:
            w = -1.0
        if not source or not math.isfinite(w) or w <= 0:
            raise ValueError(f"--mix entry {entry!r} must be [NAME=]SOURCE:WEIGHT with a finite weight > 0, "
                             "e.g. finance.jsonl:0.5")
        name = name or ("default" if source == "default" else Path(source).stem or "source")
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        while name in [p[0] for p in parts]:
            name += "_"
        parts.append((name, source, w))
    total = sum(p[2] for p in parts)
    return [(n, s, w / total) for n, s, w in parts]


@dataclass
class TrainConfig:
    """Optimisation, budget, evaluation and checkpointing for one training run."""

    seq_len: int = 256  # tokens per training sequence (<= model max_seq_len)
    batch_size: int = 16  # global batch in sequences per optimizer step (all ranks, all micro-steps)
    micro_batch_size: int | None = None  # sequences per forward pass per rank; None: whole share
    lr: float = 3e-3  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 20  # linear warmup steps before the cosine decay
    weight_decay: float = 0.1  # AdamW decay on matrices (not on norms or biases)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    grad_clip: float = 1.0  # 0 disables clipping
    max_steps: int | None = None  # budget: optimizer steps
    max_tokens: int | None = None  # budget: training tokens
    max_time: float | None = None  # budget: wall-clock seconds (steps fixed after timing a few)
    eval_every: int = 100  # steps between validation evaluations
    eval_batches: int = 10  # validation batches per evaluation (a fixed sample)
    ckpt_every: int = 200  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    seed: int = 1337  # seeds weights, data order and dropout
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "float32"  # float32 | bfloat16 | float16 (autocast; fp32 is the CPU default)
    threads: int | None = None  # torch intra-op threads on CPU (None: torch's default)
    log_every: int = 10  # steps between metrics.jsonl lines
    compile: bool = False  # torch.compile the training forward/backward (first step compiles; CPU needs g++)
    strategy: str = "single"  # single | ddp | fsdp (ddp/fsdp: under torchrun or with --nproc N)
    fsdp_shard: str = "full"  # fsdp: full (ZeRO-3) | grad_op (ZeRO-2-like: params stay gathered forward to backward)
    backend: str = "auto"  # process-group backend: auto (nccl on CUDA, gloo on CPU) | gloo | nccl
    dist_timeout: float = 300.0  # seconds a collective waits for a missing rank before the run stops
    init_from: str | None = None  # run dir or checkpoint to take weights from (fresh optimizer)

    def __post_init__(self) -> None:
        _finite(self)
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        _positive("weight_decay", self.weight_decay, allow_zero=True)
        for name in ("seq_len", "batch_size", "lr", "eval_every", "eval_batches", "ckpt_every", "log_every"):
            _positive(name, getattr(self, name))
        _positive("warmup_steps", self.warmup_steps, allow_zero=True)
        _positive("grad_clip", self.grad_clip, allow_zero=True)
        _choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))
        _choice("strategy", self.strategy, ("single", "ddp", "fsdp"))
        _choice("fsdp_shard", self.fsdp_shard, ("full", "grad_op"))
        _choice("backend", self.backend, ("auto", "gloo", "nccl"))
        _positive("dist_timeout", self.dist_timeout)
        if self.micro_batch_size is not None:
            _positive("micro_batch_size", self.micro_batch_size)
        if not any(b is not None for b in (self.max_steps, self.max_tokens, self.max_time)):
            raise ValueError("give a budget: max_steps, max_tokens or max_time (e.g. --max-time 180)")
        for name in ("max_steps", "max_tokens", "max_time"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class RunConfig:
    """Everything `config.json` in a run directory holds."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_time=180.0))

    def __post_init__(self) -> None:
        if self.train.seq_len > self.model.max_seq_len:
            raise ValueError(
                f"seq_len={self.train.seq_len} exceeds the model context max_seq_len={self.model.max_seq_len}; "
                "lower --seq-len or raise --max-seq-len"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return cls(
            model=from_dict(ModelConfig, d.get("model", {})),
            data=from_dict(DataConfig, d.get("data", {})),
            train=from_dict(TrainConfig, d.get("train", {})),
        )

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path} not found: is this a run directory made by `llmcycle prepare` or `train`?")
        return cls.from_dict(read_json_object(path))


def read_json_object(path: str | Path) -> dict:
    """A JSON file that must hold an object; a damaged, binary or foreign file is a ValueError naming it."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text (a binary file?); it should be a JSON object") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); fix or "
                         "replace the file") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path} holds a JSON {type(d).__name__}, not an object; is it the right file?")
    return d


def from_dict(cls, d: dict):
    """Build dataclass `cls` from `d`, naming unknown keys instead of failing obscurely."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(names)}")
    return cls(**d)
