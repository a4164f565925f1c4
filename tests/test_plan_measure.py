"""The planner against llmcycle's own models: exact parameters, FLOPs vs FlopCounterMode, the fp32
activation formula vs the tensors autograd saves, and peak memory vs a measured run."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from conftest import saved_activation_bytes  # noqa: E402

from llmcycle.config import ModelConfig  # noqa: E402
from llmcycle.models import build_model  # noqa: E402
from llmcycle.models.accounting import GROUPS, count_params, measure_flops  # noqa: E402
from llmcycle.plan import compute, memory  # noqa: E402
from llmcycle.plan.measure import Case, measure_cpu_peak, predicted  # noqa: E402
from llmcycle.plan.shape import from_config, param_groups  # noqa: E402
from llmcycle.plan.source import resolve  # noqa: E402

SMALL = dict(vocab_size=512, d_model=128, n_head=4, n_layer=2, max_seq_len=128)
CONFIGS = {
    "llama-like": {},
    "gpt2-like": dict(mlp="gelu_tanh", pos_emb="learned", norm="layernorm", bias=True),
    "untied-gelu": dict(mlp="gelu", tie_embeddings=False),
    "gqa": dict(n_head=8, n_kv_head=2),
    "head-dim-and-dff": dict(head_dim=48, d_ff=200, norm="layernorm"),
    "layernorm-no-bias-learned": dict(norm="layernorm", pos_emb="learned", n_layer=3),
}


def cfg_of(name: str, **kw) -> ModelConfig:
    return ModelConfig(**{**SMALL, **CONFIGS[name], **kw})


@pytest.mark.parametrize("name", list(CONFIGS))
def test_analytic_params_equal_meta_count_by_group(name):
    cfg = cfg_of(name)
    exact, analytic = count_params(cfg), param_groups(from_config(cfg))
    assert {g: analytic[g] for g in GROUPS + ("total",)} == exact
    assert analytic["other"] == 0


FAMILY_CASES = [("encoder", {}), ("encoder", CONFIGS["gpt2-like"]), ("seq2seq", {"n_decoder_layer": 3}),
                ("seq2seq", {**CONFIGS["untied-gelu"], "pos_emb": "learned", "n_kv_head": 2})]


def family_cfg(family: str, kw: dict) -> ModelConfig:
    cfg = ModelConfig(**{**SMALL, **kw, "family": family})
    try:
        count_params(cfg)
    except ValueError:
        pytest.skip(f"llmcycle's {family} model is not built yet")
    return cfg


@pytest.mark.parametrize("family,kw", FAMILY_CASES)
def test_other_families_params_by_group(family, kw):
    cfg = family_cfg(family, kw)
    analytic = param_groups(from_config(cfg))
    assert {g: analytic[g] for g in GROUPS + ("total",)} == count_params(cfg)


@pytest.mark.parametrize("family,kw", FAMILY_CASES[1::2])  # one per family keeps the file fast
def test_other_families_step_flops(family, kw):
    cfg = family_cfg(family, kw)
    torch.manual_seed(0)
    model = build_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 48))
    if family == "seq2seq":
        dec = torch.randint(0, cfg.vocab_size, (2, 16))
        measured = measure_flops(model, idx, dec, dec_idx=dec)
        predicted = compute.step_flops(from_config(cfg), 2, 48, dec_seq=16)
    else:
        measured, predicted = measure_flops(model, idx, idx), compute.step_flops(from_config(cfg), 2, 48)
    assert predicted == measured


def test_resolve_our_config_is_exact():
    info = resolve(config=cfg_of("gqa"))
    assert info.exact and info.n_params == count_params(cfg_of("gqa"))["total"]


@pytest.mark.parametrize("name", ["llama-like", "gpt2-like"])  # GQA is covered by the seq2seq case
def test_step_flops_match_flop_counter(name):
    cfg = cfg_of(name)
    torch.manual_seed(0)
    model = build_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 64))
    measured = measure_flops(model, idx, idx)
    predicted = compute.step_flops(from_config(cfg), 2, 64)
    assert abs(predicted / measured - 1) < 0.05  # the brief's bound; in practice they are equal
    assert predicted == measured


def _saved_bytes(cfg: ModelConfig, batch: int, seq: int) -> int:
    return saved_activation_bytes(build_model(cfg), torch.randint(0, cfg.vocab_size, (batch, seq)))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fp32_activation_formula_matches_saved_tensors(name):
    cfg = cfg_of(name)
    predicted = memory.llmcycle_activation_bytes(from_config(cfg), 64, 3)["saved"]
    assert abs(predicted / _saved_bytes(cfg, 3, 64) - 1) < 0.01


def test_peak_training_memory_within_10_percent_of_rss():
    case = Case(dict(vocab_size=2048, d_model=128, n_head=4, n_layer=2, max_seq_len=128), 8, 128, "adamw")
    pred, meas = predicted(case), measure_cpu_peak(case)  # compare() also counts FLOPs, tested above
    assert abs(pred["peak"] / meas["peak"] - 1) < 0.10, (pred, meas)


def test_cuda_measurement_says_so_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    from llmcycle.plan.measure import measure_cuda_peak

    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        measure_cuda_peak(Case(SMALL, 1, 8))
