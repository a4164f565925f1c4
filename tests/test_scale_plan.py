"""Planner additions of the scaling-law lab against the papers' printed numbers: Kaplan's derived
compute exponent, the inference-aware optimum (Sardana et al.), and gradient precision (Megatron-LM)."""

from __future__ import annotations

import math

import pytest

from llmcycle.plan import memory, scaling
from llmcycle.plan.cli import add_arguments, make_plan
from llmcycle.plan.scaling import CHINCHILLA_PRINTED


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
