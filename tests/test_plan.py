"""The planner against the literature, at the precision the papers print.

Every expected number below is a figure printed in a paper (or the course / a model card); the
planner computes its side through the formulas, never from a stored answer. `printed(x, unit)`
rounds x to the step a printed figure implies, so "3.14e23" checks 3 significant figures.
"""

from __future__ import annotations

import math

import pytest

from llmcycle import plan
from llmcycle.plan import compute, memory, scaling
from llmcycle.plan.presets import PRESETS, printed_unit


def sig(x: float, digits: int) -> float:
    """x rounded to `digits` significant figures."""
    return float(f"{x:.{digits - 1}e}")


def params(name: str) -> int:
    return plan.param_groups(plan.get_preset(name).shape)["total"]


# ------------------------------------------------------------------ parameters vs published counts


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_params_match_published_count(name):
    p = PRESETS[name]
    n, target = params(name), float(p.published) * p.unit
    if p.tolerance is None:
        step = printed_unit(p.published, p.unit)
        assert round(n / step) * step == pytest.approx(target), f"{name}: {n:,} vs printed {p.published}"
    else:
        assert p.note and abs(n / target - 1) <= p.tolerance, f"{name}: {n:,} vs {p.published} ({p.note})"


@pytest.mark.parametrize("name,hf_count", [
    ("llama2-7b", 6_738_415_616), ("t5-small", 60_506_624), ("t5-base", 222_903_552), ("bert-base", 109_482_240),
])
def test_preset_params_match_hugging_face_counts_exactly(name, hf_count):
    assert params(name) == hf_count  # the counts Hugging Face reports for these checkpoints


def test_gpt3_table_2_1_175b_worked_example():
    assert round(params("gpt3-175b") / 1e8) * 1e8 == 174.6e9  # planner.md / GPT-3 Table D.1


# ------------------------------------------------------------------ memory: course, ZeRO, Korthikanti


def test_course_figures_bytes_per_parameter():
    assert memory.weight_bytes(1e9, "fp32") / 1e9 == 4
    assert memory.weight_bytes(1e9, "bf16") / 1e9 == memory.weight_bytes(1e9, "fp16") / 1e9 == 2
    assert memory.weight_bytes(1e9, "int8") / 1e9 == 1
    per = memory.model_state_bytes_per_param("fp32", "adamw")  # weights 4 + grads 4 + Adam moments 8
    assert round((sum(per.values()) + memory.COURSE_ACTIVATION_BYTES_PER_PARAM) * 1e9 / 1e9) == 24


def test_zero_paper_figure_1():
    psi, nd = 7.5e9, 64
    got = [memory.model_state_bytes(psi, "bf16", "adamw", s, dp=nd)["total"] / 1e9 for s in ("ddp", "zero1", "zero2", "zero3")]
    assert round(got[0]) == 120
    assert [round(g, 1) for g in got[1:]] == [31.4, 16.6, 1.9]


def test_optimizer_bytes_transformer_math_101():
    master = memory.MASTER_COPY_BYTES
    got = {o: memory.model_state_bytes_per_param("bf16", o)["optimizer"] for o in ("adamw", "adam8bit", "sgd")}
    assert got == {"adamw": 12, "adam8bit": 6, "sgd": 8} and got["adamw"] - master == 8


@pytest.mark.parametrize("t,sp,rc", [(1, False, "none"), (8, False, "none"), (8, True, "none"), (8, True, "selective"),
                                     (1, False, "selective"), (1, False, "full")])
def test_generalised_activation_formula_reduces_to_korthikanti_table_2(t, sp, rc):
    sh = plan.get_preset("gpt3-175b").shape
    ours = memory.layer_activation_bytes(sh, 2048, 1, 2, t, sp, rc, flash=False, dropout=True)
    assert ours == pytest.approx(memory.korthikanti_layer_bytes(2048, 1, sh.d_model, sh.n_head, t, sp, rc), rel=1e-12)


def test_korthikanti_abstract_5x_activation_reduction():
    """'reduces activation memory by 5x': TP only vs TP + sequence parallel + selective (GPT-3 175B, t = 8)."""
    sh = plan.get_preset("gpt3-175b").shape
    before = memory.korthikanti_layer_bytes(2048, 1, sh.d_model, sh.n_head, 8, False, "none")
    after = memory.korthikanti_layer_bytes(2048, 1, sh.d_model, sh.n_head, 8, True, "selective")
    assert round(before / after) == 5


@pytest.mark.parametrize("a,h,layers,mfu,hfu", [(64, 6144, 48, 41.5, 43.7), (96, 12288, 96, 51.4, 52.8),
                                                (128, 20480, 105, 56.0, 57.0), (160, 25600, 128, 56.3, 57.0)])
def test_korthikanti_mfu_vs_hfu_table(a, h, layers, mfu, hfu):
    """Megatron's table (A100, selective recompute): HFU/MFU = Eq. 8 / Eq. 7 (s = 2048, V = 51200).
    Both percentages are printed to 0.1, so allow their rounding (+-0.05 each)."""
    r = compute.korthikanti_hardware_flops(1, 2048, h, layers, 51200) / compute.korthikanti_model_flops(1, 2048, h, layers, 51200)
    assert abs(mfu * r - hfu) <= 0.05 * r + 0.05


def test_kv_cache_formula_and_gqa():
    l7, l70 = plan.get_preset("llama2-7b").shape, plan.get_preset("llama2-70b").shape
    assert memory.kv_cache_bytes(l7, 1, 4096, "bf16") == 2 * 32 * 32 * 128 * 4096 * 2
    assert memory.kv_cache_bytes(l70, 1, 4096, "bf16") == 2 * 80 * 8 * 128 * 4096 * 2  # GQA: 8 KV heads, not 64
    assert memory.kv_cache_bytes(l70, 1, 4096, "bf16", tp=8) == memory.kv_cache_bytes(l70, 1, 4096, "bf16") / 8
    assert memory.kv_cache_bytes(plan.get_preset("bert-base").shape, 8, 512) == 0


def test_smallest_gpu_count_is_the_boundary():
    kw = dict(dtype="bf16", optimizer="adamw", batch=1, seq=2048)
    sh, n = plan.get_preset("llama2-13b").shape, params("llama2-13b")
    cap = plan.get_gpu("a100-40gb").usable_bytes()
    dp = memory.smallest_dp(n, sh, cap, strategy="zero3", **kw)
    assert memory.training_memory(n, sh, strategy="zero3", dp=dp, **kw)["total"] <= cap
    assert memory.training_memory(n, sh, strategy="zero3", dp=dp - 1, **kw)["total"] > cap
    assert memory.smallest_dp(n, sh, cap, strategy="ddp", **kw) is None  # 16 bytes/param x 13B > 40 GB


# ------------------------------------------------------------------ compute: GPT-3 Table D.1


def test_gpt3_175b_compute_worked_example():
    f = compute.training_flops(params("gpt3-175b"), 300e9)
    assert sig(f, 3) == 3.14e23 and sig(compute.pf_days(f), 3) == 3.64e3


D1 = [("gpt3-small", 2.25e20, 2.60), ("gpt3-medium", 6.41e20, 7.42), ("gpt3-large", 1.37e21, 15.8),
      ("gpt3-xl", 2.38e21, 27.5), ("gpt3-2.7b", 4.77e21, 55.2), ("gpt3-6.7b", 1.20e22, 139),
      ("gpt3-13b", 2.31e22, 268), ("gpt3-175b", 3.14e23, 3640),
      ("t5-small", 1.80e20, 2.08), ("t5-base", 6.60e20, 7.64), ("t5-large", 2.31e21, 26.7), ("t5-3b", 9.00e21, 104),
      ("t5-11b", 3.30e22, 382)]


@pytest.mark.parametrize("name,flops,pfd", D1)
def test_gpt3_table_d1_total_compute(name, flops, pfd):
    """Table D.1 computes 6ND (3ND for T5) from the parameter count as it prints it, on 300B tokens
    (GPT-3) or 1T tokens (T5); GPT-3's counts are our analytic ones rounded to that precision."""
    p = PRESETS[name]
    n = float(p.published) * p.unit
    if name.startswith("gpt3"):
        step = printed_unit(p.published, p.unit)
        assert round(params(name) / step) * step == pytest.approx(n)
    tokens = 1e12 if name.startswith("t5") else 300e9
    f = compute.training_flops(n, tokens, p.shape.family)
    assert sig(f, 3) == flops and sig(compute.pf_days(f), 3) == pfd


def test_bert_base_row_of_table_d1():
    n = sig(params("bert-base"), 3)  # Table D.1 prints 109M
    assert n == 109e6 and sig(compute.training_flops(n, 250e9), 3) == 1.64e20


def test_flops_per_token_with_attention_and_kaplan_eq_2_2():
    sh = plan.get_preset("gpt3-175b").shape
    n_ne = plan.non_embedding_params(sh)
    assert compute.kaplan_forward_flops_per_token(sh) == 2 * n_ne + 2 * 96 * 2048 * 12288
    per_token = compute.flops_per_token(sh, 2048)  # 6N + 12 L H D T with the head counted
    assert per_token == 3 * (2 * (12 * 96 * 12288**2 + 50257 * 12288) + 4 * 2048 * 12288 * 96)
    assert compute.korthikanti_model_flops(1, 2048, 12288, 96, 50257) == pytest.approx(2048 * per_token, rel=1e-12)


def test_gpu_hours_and_cost():
    c = compute.run_cost(3.12e23, "a100-80gb", 1000, "bf16", mfu=0.5, price=2.0)
    assert c["gpu_hours"] == pytest.approx(3.12e23 / (312e12 * 0.5) / 3600)
    assert c["wall_days"] == pytest.approx(c["gpu_hours"] / 1000 / 24) and c["cost"] == pytest.approx(2 * c["gpu_hours"])
    assert compute.flops_from_gpu_hours(c["gpu_hours"], "a100-80gb", "bf16", 0.5) == pytest.approx(3.12e23)


# ------------------------------------------------------------------ scaling laws


def test_chinchilla_gopher_budget_under_20x_rule():
    n, d = scaling.chinchilla_rule(5.76e23)  # "Gopher's budget ... ~70B parameters, 1.4T tokens"
    assert round(n / 1e10) * 1e10 == 70e9 and round(d / 1e11) * 1e11 == pytest.approx(1.4e12)


TABLE3 = [(400e6, 1.92e19, 8.0e9, 0.1e9), (1e9, 1.21e20, 20.2e9, 0.1e9), (10e9, 1.23e22, 205.1e9, 0.1e9),
          (175e9, 3.85e24, 3.7e12, 0.1e12), (280e9, 9.90e24, 5.9e12, 0.1e12), (520e9, 3.43e25, 11.0e12, 0.1e12),
          (1e12, 1.27e26, 21.2e12, 0.1e12), (10e12, 1.30e28, 216.2e12, 0.1e12)]


@pytest.mark.parametrize("n,flops,tokens,step", TABLE3)
def test_chinchilla_table_3_is_6nd(n, flops, tokens, step):
    """Approach 1 (Table 3): tokens = C / (6N) to the printed step, allowing C's own rounding
    (3 significant figures). The 67B row (5.76e23, 1.5T) is not 6ND-consistent in the paper
    itself (5.76e23 / (6 x 67e9) = 1.43T) and is left out."""
    half_c = 0.5 * 10 ** (math.floor(math.log10(flops)) - 2)
    lo, hi = (flops - half_c) / (6 * n), (flops + half_c) / (6 * n)
    assert lo - step / 2 <= tokens <= hi + step / 2
    assert compute.training_flops(n, tokens) == pytest.approx(flops, rel=0.03)


@pytest.mark.parametrize("n,flops", [(400e6, 1.92e19), (1e9, 1.21e20), (10e9, 1.23e22)])
def test_20x_rule_recovers_table_3_model_sizes(n, flops):
    got, _ = scaling.chinchilla_rule(flops)
    step = 10 ** math.floor(math.log10(n))
    assert round(got / step) * step == n


def test_chinchilla_table_2_exponents_need_unrounded_constants():
    assert (round(scaling.CHINCHILLA.a, 2), round(scaling.CHINCHILLA.b, 2)) == (0.46, 0.54)  # Table 2, Approach 3
    assert (round(scaling.CHINCHILLA_PRINTED.a, 2), round(scaling.CHINCHILLA_PRINTED.b, 2)) == (0.45, 0.55)
    n_unrounded, n_printed = scaling.CHINCHILLA.optimum(5.76e23)[0], scaling.CHINCHILLA_PRINTED.optimum(5.76e23)[0]
    assert n_unrounded / n_printed > 1.2  # "the rounding changes the optimum a lot"


def test_closed_form_optimum_minimises_the_fit():
    fit, c = scaling.CHINCHILLA, 1e22
    n, d = fit.optimum(c)
    assert 6 * n * d == pytest.approx(c)
    for k in (0.9, 1.1):
        assert fit.loss(n * k, d / k) > fit.loss(n, d)


def test_epoch_refit_gives_about_20_tokens_per_parameter():
    n, d = scaling.EPOCH.optimum(5.76e23)
    assert round(d / n, -1) == 20


def test_kaplan_8x_model_needs_about_5x_data():
    k = scaling.KAPLAN  # sec. 1.2: D grows as N^(alpha_N / alpha_D)
    assert round(8 ** (k["alpha_n"] / k["alpha_d"])) == 5
    assert scaling.kaplan_loss_nd(1e9, 1e30) == pytest.approx(scaling.kaplan_loss_n(1e9), rel=1e-6)
    assert scaling.kaplan_loss_nd(1e30, 1e10) == pytest.approx(scaling.kaplan_loss_d(1e10), rel=1e-6)
    assert scaling.kaplan_loss_n(8.8e13) == 1.0 and scaling.kaplan_loss_c(3.1e8 * compute.PF_DAY) == pytest.approx(1.0)


def test_muennighoff_readme_examples():
    """huggingface/datablations README: losses of the two Figure 1 models and the optimal allocation."""
    assert scaling.data_constrained_loss(6.34e9, 242e9, 25e9) == pytest.approx(2.2256440889984477, abs=1e-12)
    assert scaling.data_constrained_loss(8.67e9, 178e9, 25e9) == pytest.approx(2.2269634075087867, abs=1e-12)
    n, d = scaling.data_constrained_optimum(6 * 8.67e9 * 178e9, 25e9)  # "227B tokens, 9.1 epochs, 6.8B parameters"
    assert (round(d / 1e9), round(d / 25e9, 1), round(n / 1e9, 1)) == (227, 9.1, 6.8)


def test_up_to_four_epochs_is_nearly_fresh_data():
    assert scaling.effective_tokens(4e9, 1e9) / 4e9 > 0.9  # Muennighoff et al.: ~4 epochs nearly as good
    assert scaling.effective_tokens(40e9, 1e9) / 40e9 < 0.5


def test_data_plan_verdicts():
    c = 1e24
    _, d = scaling.optimum(c)
    assert scaling.data_plan(c, 2 * d)["verdict"] == "enough data"
    assert scaling.data_plan(c, d / 3)["verdict"] == "repeat the data"
    bound = scaling.data_plan(c, d / 10)
    assert bound["verdict"] == "data-bound" and bound["epochs"] == 4
    assert scaling.optimum(6 * bound["params"] * bound["tokens"])[1] == pytest.approx(bound["tokens"], rel=1e-6)
    assert bound["params"] < bound["compute_optimal_params"] < bound["spend_all_params"]
