"""Planner additions of the scaling-law lab against the papers' printed numbers: Kaplan's derived
compute exponent, the inference-aware optimum (Sardana et al.), and gradient precision (Megatron-LM).

Sardana et al. (arXiv 2401.00448, ICML 2024) print their worked example in Figure 1's caption; the
other figures are plots (ratios read off curves), so the tests use the caption and the printed output
of the authors' own code (github.com/nikhilsardana/beyond-chinchilla, README and tests.sh)."""

from __future__ import annotations

import math

import pytest

from llmcycle.plan import memory, scaling
from llmcycle.plan.cli import add_arguments, make_plan
from llmcycle.plan.scaling import CHINCHILLA_PRINTED, SARDANA


def test_kaplan_alpha_c_min_from_alpha_s_alpha_b_alpha_n():
    k = scaling.kaplan_derived_exponents()
    # Kaplan et al. 2020: Eq. B.7 prints 0.052 for 1/(1/0.76 + 1/0.21 + 1/0.076); Eq. 1.8 / 6.4 quote ~0.054
    assert k["alpha_c_min"] == pytest.approx(0.052, abs=5e-4)
    assert abs(k["alpha_c_min"] - 0.054) < 0.0025
    assert k["n_exponent"] == pytest.approx(k["alpha_c_min"] / 0.076)
    assert 0.65 < k["n_exponent"] < 0.75  # beside the directly fitted N ~ C^0.73
    assert k["fitted_n_exponent"] == 0.73 and k["fitted_alpha_c_min"] == 0.050


def test_inference_optimum_without_inference_is_chinchillas_point():
    fit = CHINCHILLA_PRINTED
    n0, d0 = fit.optimum(5.76e23)
    r = scaling.inference_optimum(fit.loss(n0, d0), 0.0, fit)
    assert r["params"] == pytest.approx(n0, rel=1e-4)
    assert r["train_tokens"] == pytest.approx(d0, rel=1e-4)
    assert r["flops_saved"] == pytest.approx(0.0, abs=1e-9)


def test_inference_demand_moves_the_optimum_to_smaller_longer_trained_models():
    """Sardana et al. 2023: with large inference demand, train smaller models on more tokens than
    Chinchilla-optimal, at the same loss and fewer lifetime FLOPs; the minimum is stationary."""
    fit = CHINCHILLA_PRINTED
    n0, d0 = fit.optimum(1e23)
    target = fit.loss(n0, d0)
    prev = None
    for d_inf in (1e11, 1e12, 1e13):
        r = scaling.inference_optimum(target, d_inf, fit)
        assert r["params"] < r["chinchilla_params"] and r["tokens_per_param"] > r["chinchilla_tokens_per_param"]
        assert fit.loss(r["params"], r["train_tokens"]) == pytest.approx(target, rel=1e-9)
        assert 0 < r["flops_saved"] < 1
        if prev:  # more demand, smaller model
            assert r["params"] < prev["params"] and r["flops_saved"] > prev["flops_saved"]
        prev = r
        # d(total)/d(log N) = 0 at the optimum: nudging N either way costs FLOPs
        for f in (0.98, 1.02):
            n = r["params"] * f
            other = 6 * n * scaling.tokens_for_loss(n, target, fit) + 2 * n * d_inf
            assert other > r["total_flops"]


def test_sardana_figure_1_thirteen_b_model_with_2t_inference_tokens():
    """Figure 1 caption: "An LLM developer seeking to train a 13B model who expects 2 trillion tokens of
    inference demand during the model's lifetime can reduce their total compute by 1.7 x 10^22 FLOPs (17%)
    by instead training a 7B model on more data." Checked to the printed digits."""
    base = scaling.chinchilla_point_for_params(13e9)  # the Chinchilla-style 13B model (paper's constants)
    r = scaling.inference_optimum(base["loss"], 2e12)
    assert r["fit"] == "sardana" and r["chinchilla_params"] == pytest.approx(13e9, rel=1e-9)
    assert round(r["params"] / 1e9) == 7                      # "a 7B model" (6.97B)
    assert round(100 * r["flops_saved"]) == 17                # "(17%)" (17.45 %)
    assert round(r["flops_saved_abs"] / 1e21) == 17           # "1.7 x 10^22 FLOPs" (1.69e22)
    assert r["tokens_per_param"] > 4 * r["chinchilla_tokens_per_param"]  # "on more data" (179 vs 44 tokens/param)
    # With Hoffmann et al.'s rounded exponents (0.34, 0.28) the same question gives 8.0B and 10 %: the
    # figure needs the paper's 0.336 / 0.283 (only the exponents matter here; E cancels, A and B are shared).
    b = scaling.chinchilla_point_for_params(13e9, CHINCHILLA_PRINTED)
    rp = scaling.inference_optimum(b["loss"], 2e12, CHINCHILLA_PRINTED)
    assert round(rp["params"] / 1e9) == 8 and round(100 * rp["flops_saved"]) == 10


def test_sardana_code_printed_examples():
    """The authors' README prints these outputs of their scripts (same constants, Newton's method on the
    stationarity condition): model_calculator.py --model 70e9 --data 1e12 -> loss 1.947;
    compute_optimal.py --loss 1.947 --inference_tokens 2e12 -> 2.418e+10 params, 2.657e+12 tokens,
    70.96 % of the params, 146.77 % of the tokens, 95.22 % of the FLOPs of the equal-quality Chinchilla
    model; cost_calculator.py --model 30e9 --chinchilla (1e9 requests x (500 + 100) tokens) -> 1.556e+12
    tokens, loss 1.958253360475841, train FLOPs 2.801e+23, train + inference FLOPs 3.161e+23."""
    assert round(SARDANA.loss(70e9, 1e12), 3) == 1.947
    r = scaling.inference_optimum(1.947, 2e12)
    assert f"{r['params']:.3e}" == "2.418e+10" and f"{r['train_tokens']:.3e}" == "2.657e+12"
    assert round(100 * r["params_ratio"], 2) == 70.96
    assert round(100 * r["tokens_ratio"], 2) == 146.77
    assert round(100 * r["flops_ratio"], 2) == 95.22
    c = scaling.chinchilla_point_for_params(30e9)
    assert f"{c['tokens']:.3e}" == "1.556e+12" and f"{c['flops']:.3e}" == "2.801e+23"
    assert c["loss"] == pytest.approx(1.958253360475841, rel=1e-12)
    assert f"{c['flops'] + 2 * 30e9 * 1e9 * (500 + 100):.3e}" == "3.161e+23"  # inference: 2N per prompt + output token


def test_plan_cli_prints_the_inference_aware_optimum():
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    plan = make_plan(p.parse_args(["--params", "13e9", "--inference-tokens", "2e12"]))
    ia = plan["scaling"]["inference_aware"]  # Figure 1 framing: a 13B model trained compute-optimally
    assert ia["basis"] == "this model trained compute-optimally" and ia["given_params"] == 13e9
    assert round(ia["params"] / 1e9) == 7 and round(100 * ia["flops_saved"]) == 17
    assert ia["given_total_flops"] == pytest.approx(ia["chinchilla_total_flops"], rel=1e-9)
    from llmcycle.plan.tables import render
    text = render(plan)
    assert "inference-aware" in text and "6.97B" in text and "17.4% fewer" in text
    # from a budget: the budget's compute-optimal model sets the loss
    b = make_plan(p.parse_args(["--params", "7e9", "--budget-flops", "5.76e23", "--inference-tokens", "2e12"]))
    ib = b["scaling"]["inference_aware"]
    assert ib["chinchilla_train_flops"] == pytest.approx(5.76e23, rel=1e-6) and ib["params"] < ib["chinchilla_params"]
    # from --tokens: this model's own lifetime FLOPs are compared too (7B on 2T, 1e13 inference tokens)
    t = make_plan(p.parse_args(["--params", "7e9", "--tokens", "2e12", "--inference-tokens", "1e13"]))["scaling"]
    it = t["inference_aware"]
    assert it["given_total_flops"] == pytest.approx(6 * 7e9 * 2e12 + 2 * 7e9 * 1e13)
    assert 0 < it["given_flops_saved"] < it["flops_saved"] and it["params"] < 7e9
    # no inference flag: no section
    assert "inference_aware" not in (make_plan(p.parse_args(["--params", "7e9", "--tokens", "1e12"]))["scaling"] or {})


def test_inference_optimum_refuses_unreachable_loss():
    with pytest.raises(ValueError, match="irreducible loss"):
        scaling.inference_optimum(1.5, 1e12)


def test_fp32_gradients_as_megatron_counts_them():
    # Megatron-LM distributed-optimizer docs: bf16 params + fp32 grads = 18 bytes/param (6 + 12/d sharded);
    # ZeRO's mixed-precision count keeps 16-bit gradients: 16 bytes/param
    assert sum(memory.model_state_bytes_per_param("bf16", "adamw").values()) == 16
    assert sum(memory.model_state_bytes_per_param("bf16", "adamw", grad_dtype="fp32").values()) == 18
    psi, d = 1e9, 8
    z1 = memory.model_state_bytes(psi, "bf16", "adamw", "zero1", dp=d, grad_dtype="fp32")
    assert z1["total"] == pytest.approx((6 + 12 / d) * psi)
    assert memory.model_state_bytes_per_param("fp32", "adamw", grad_dtype="fp32")["grads"] == 4
    with pytest.raises(ValueError, match="narrower than the training dtype"):
        memory.grad_bytes_per_param("fp32", "bf16")


def test_plan_cli_surfaces_gradient_precision():
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    base = make_plan(p.parse_args(["--params", "7.5e9", "--gpus", "64"]))
    fp32 = make_plan(p.parse_args(["--params", "7.5e9", "--gpus", "64", "--grad-dtype", "fp32"]))
    assert fp32["training"]["settings"]["grad_dtype"] == "fp32" and base["training"]["settings"]["grad_dtype"] == "bf16"
    ddp = fp32["training"]["per_device"]["ddp"]
    assert ddp["grads_bytes"] == pytest.approx(4 * 7.5e9)
    assert ddp["total_bytes"] - base["training"]["per_device"]["ddp"]["total_bytes"] == pytest.approx(2 * 7.5e9)
    assert not math.isnan(ddp["total_bytes"])
