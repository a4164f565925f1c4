"""Named presets: published shapes of well-known models, with the parameter counts their papers print.

Each preset keeps the printed count as text (`published`, in `unit`s) so tests can check the
analytic count against it *to the printed precision*: "174600" million is checked to the
nearest 100 M, "13" billion to the nearest 1 B, "70" billion to the nearest 10 B.
Where a paper's count is not reproduced by its own published shape, `tolerance` says by how
much and `note` says why; nothing is silently fudged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmcycle.plan.shape import ModelShape

GPT = dict(vocab_size=50257, max_seq_len=2048)  # GPT-3 paper, sec. 2.1 / Table 2.1
LLAMA = dict(mlp="swiglu", norm="rmsnorm", pos_emb="rope", tied=False, attn_bias=False, mlp_bias=False, norm_bias=False)
T5 = dict(family="seq2seq", vocab_size=32128, max_seq_len=512, mlp="relu", norm="rmsnorm", pos_emb="relative",
          attn_bias=False, mlp_bias=False, norm_bias=False, tied=True, head_dim=64)
BERT = dict(family="encoder", vocab_size=30522, max_seq_len=512, embed_norm=True, final_norm=False, type_vocab=2, pooler=True)
GOPHER = dict(vocab_size=32000, max_seq_len=2048, norm="rmsnorm", pos_emb="xl", tied=False, attn_bias=False,
              mlp_bias=False, norm_bias=False, head_dim=128)
BIGSCI = dict(max_seq_len=2048, pos_emb="alibi", embed_norm=True, tied=True)


@dataclass(frozen=True)
class Preset:
    shape: ModelShape
    published: str  # the count as printed, in `unit`s
    unit: float  # 1e6 or 1e9
    source: str
    tolerance: float | None = None  # relative; None: the printed precision
    note: str = ""
    aliases: tuple = field(default_factory=tuple)


def _p(name, published, unit, source, tolerance=None, note="", **shape) -> tuple[str, Preset]:
    return name, Preset(ModelShape(name=name, **shape), published, unit, source, tolerance, note)


_D1 = "Brown et al. 2020 (GPT-3), shapes Table 2.1, params Table D.1"
_G13 = "Table 2.1 prints d_model 5140, a typo: 40 heads x 128 = 5120, which reproduces Table D.1's 12850M"
_GXL = ("Table 2.1 prints 24 heads of 128 (= 3072, not d_model 2048); attention as wide as d_model, "
        "16 x 128, reproduces Table D.1's 1320M, so the planner uses that")
_T5L = ("Raffel et al. print 770M, but the published shape (24+24 layers, d 1024, ff 4096, 16 heads) gives "
        "737.7M with the shared embedding (Hugging Face counts the same); 770M matches only with an extra "
        "untied 32128 x 1024 head, which does not fit the other T5 sizes")

PRESETS: dict[str, Preset] = dict([
    _p("gpt3-small", "125", 1e6, _D1, n_layer=12, d_model=768, n_head=12, **GPT),
    _p("gpt3-medium", "356", 1e6, _D1, n_layer=24, d_model=1024, n_head=16, **GPT),
    _p("gpt3-large", "760", 1e6, _D1, n_layer=24, d_model=1536, n_head=16, **GPT),
    _p("gpt3-xl", "1320", 1e6, _D1, note=_GXL, n_layer=24, d_model=2048, n_head=16, **GPT),
    _p("gpt3-2.7b", "2650", 1e6, _D1, n_layer=32, d_model=2560, n_head=32, **GPT),
    _p("gpt3-6.7b", "6660", 1e6, _D1, n_layer=32, d_model=4096, n_head=32, **GPT),
    _p("gpt3-13b", "12850", 1e6, _D1, note=_G13, n_layer=40, d_model=5120, n_head=40, **GPT),
    _p("gpt3-175b", "174600", 1e6, _D1, n_layer=96, d_model=12288, n_head=96, **GPT),
    _p("llama2-7b", "7", 1e9, "Touvron et al. 2023 (Llama 2), Table 1; HF config", n_layer=32, d_model=4096,
       n_head=32, vocab_size=32000, max_seq_len=4096, d_ff=11008, **LLAMA),
    _p("llama2-13b", "13", 1e9, "Touvron et al. 2023 (Llama 2), Table 1; HF config", n_layer=40, d_model=5120,
       n_head=40, vocab_size=32000, max_seq_len=4096, d_ff=13824, **LLAMA),
    _p("llama2-70b", "70", 1e9, "Touvron et al. 2023 (Llama 2), Table 1; HF config", n_layer=80, d_model=8192,
       n_head=64, n_kv_head=8, vocab_size=32000, max_seq_len=4096, d_ff=28672, **LLAMA),
    _p("llama3-8b", "8", 1e9, "Meta Llama 3 model card; HF config", n_layer=32, d_model=4096, n_head=32,
       n_kv_head=8, vocab_size=128256, max_seq_len=8192, d_ff=14336, **LLAMA),
    _p("llama3-70b", "70", 1e9, "Meta Llama 3 model card; HF config", n_layer=80, d_model=8192, n_head=64,
       n_kv_head=8, vocab_size=128256, max_seq_len=8192, d_ff=28672, **LLAMA),
    _p("bloom-176b", "176", 1e9, "BigScience 2022 (BLOOM), Table 3", n_layer=70, d_model=14336, n_head=112,
       vocab_size=250880, **BIGSCI),
    _p("bloomberggpt-50b", "50.6", 1e9, "Wu et al. 2023 (BloombergGPT), sec. 2.3", n_layer=70, d_model=7680,
       n_head=40, vocab_size=131072, **BIGSCI),
    _p("chinchilla-70b", "70", 1e9, "Hoffmann et al. 2022 (Chinchilla), Table 4", n_layer=80, d_model=8192,
       n_head=64, **GOPHER),
    _p("gopher-280b", "280", 1e9, "Rae et al. 2021 (Gopher), Table 1", n_layer=80, d_model=16384, n_head=128, **GOPHER),
    _p("t5-small", "60", 1e6, "Raffel et al. 2020 (T5), sec. 3.7; HF config", n_layer=6, d_model=512, n_head=8,
       d_ff=2048, **T5),
    _p("t5-base", "220", 1e6, "Raffel et al. 2020 (T5), sec. 3.7; HF config", n_layer=12, d_model=768, n_head=12,
       d_ff=3072, **T5),
    _p("t5-large", "770", 1e6, "Raffel et al. 2020 (T5), sec. 3.7; HF config", tolerance=0.05, note=_T5L,
       n_layer=24, d_model=1024, n_head=16, d_ff=4096, **T5),
    _p("t5-3b", "3", 1e9, "Raffel et al. 2020 (T5), sec. 3.7; HF config", n_layer=24, d_model=1024,
       n_head=32, **{**T5, "head_dim": 128}, d_ff=16384),
    _p("t5-11b", "11", 1e9, "Raffel et al. 2020 (T5), sec. 3.7; HF config", n_layer=24, d_model=1024,
       n_head=128, **{**T5, "head_dim": 128}, d_ff=65536),
    _p("bert-base", "110", 1e6, "Devlin et al. 2019 (BERT), sec. 3", n_layer=12, d_model=768, n_head=12, **BERT),
    _p("bert-large", "340", 1e6, "Devlin et al. 2019 (BERT), sec. 3", n_layer=24, d_model=1024, n_head=16, **BERT),
])


def get_preset(name: str) -> Preset:
    key = name.lower().replace("_", "-")
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[key]


def printed_unit(published: str, unit: float) -> float:
    """The rounding step a printed number implies: '174.6' -> 0.1, '174600' -> 100, '70' -> 10 (x unit)."""
    if "." in published:
        return 10.0 ** -len(published.split(".")[1]) * unit
    stripped = published.rstrip("0")
    return 10.0 ** (len(published) - len(stripped)) * unit
