"""The scaling-law fits (scale/fit.py) on synthetic losses from known constants, and their refusals."""

from __future__ import annotations

import numpy as np
import pytest

from llmcycle.plan.scaling import CHINCHILLA, Fit
from llmcycle.scale import fit as F


def isoflop_points(truth: Fit, budgets, per_budget: int = 7, spread: float = 6.0, noise: float = 0.0, seed: int = 0):
    """Chinchilla-style IsoFLOP design: per budget, sizes spread geometrically around the true optimum, D = C / 6N."""
    rng = np.random.default_rng(seed)
    c, n, d, loss = [], [], [], []
    for cb in budgets:
        n0, _ = truth.optimum(cb)
        for f in np.geomspace(1 / spread, spread, per_budget):
            ni = n0 * f
            di = cb / (6 * ni)
            c.append(cb)
            n.append(ni)
            d.append(di)
            loss.append(truth.loss(ni, di) * np.exp(rng.normal(0, noise)))
    return [np.array(v) for v in (c, n, d, loss)]


BUDGETS = [1e18, 3e18, 1e19, 3e19, 1e20, 3e20]


def test_approach3_recovers_known_constants_from_noisy_losses():
    c, n, d, loss = isoflop_points(CHINCHILLA, BUDGETS, noise=0.003)
    r = F.approach3(n, d, loss, refine=6)
    assert r["alpha"] == pytest.approx(CHINCHILLA.alpha, abs=0.03)
    assert r["beta"] == pytest.approx(CHINCHILLA.beta, abs=0.03)
    assert r["E"] == pytest.approx(CHINCHILLA.E, abs=0.1)
    assert r["a"] == pytest.approx(CHINCHILLA.a, abs=0.02)
    assert r["starts"] == 4500 and r["refined"] == 6  # Hoffmann et al.'s grid, scored, the best 6 refined


def test_approach3_recovers_other_constants_exactly_without_noise():
    truth = Fit("t", E=0.8, A=60.0, B=900.0, alpha=0.45, beta=0.40, source="synthetic")
    c, n, d, loss = isoflop_points(truth, [1e12, 4e12, 1.6e13, 6.4e13], per_budget=6)
    r = F.approach3(n, d, loss, refine=6)
    assert r["alpha"] == pytest.approx(0.45, abs=0.01)
    assert r["beta"] == pytest.approx(0.40, abs=0.01)
    assert r["E"] == pytest.approx(0.8, abs=0.02)
    pred = F.predict(r["fit"], n, d)
    assert np.max(np.abs(np.log(pred / loss))) < 1e-3


def test_approach2_recovers_a_known_exponent():
    c, n, d, loss = isoflop_points(CHINCHILLA, BUDGETS, per_budget=9, spread=3.0)
    r = F.approach2(c, n, d, loss)
    # the parabola in log N approximates the true profile; its vertex tracks the closed-form optimum
    assert r["a"] == pytest.approx(CHINCHILLA.a, abs=0.01)
    assert r["b"] == pytest.approx(CHINCHILLA.b, abs=0.01)
    assert all(m["interior"] for m in r["minima"])
    n_opt = CHINCHILLA.optimum(1e19)[0]
    m = next(m for m in r["minima"] if m["budget"] == 1e19)
    assert m["n_opt"] == pytest.approx(n_opt, rel=0.1)


def test_approach2_recovers_a_planted_power_law():
    """Losses built as parabolas whose vertex moves as N_opt = 3 C^0.6: the fit must return 0.6."""
    c, n, d, loss = [], [], [], []
    for cb in [1e10, 1e11, 1e12, 1e13]:
        n0 = 3 * cb**0.6
        for f in np.geomspace(0.2, 5, 5):
            c.append(cb)
            n.append(n0 * f)
            d.append(cb / (6 * n0 * f))
            loss.append(2.0 + 0.05 * np.log(f) ** 2 - 0.01 * np.log(cb))
    r = F.approach2(c, n, d, loss)
    assert r["a"] == pytest.approx(0.6, abs=1e-6)
    assert r["b"] == pytest.approx(0.4, abs=1e-6)
    assert r["k_n"] == pytest.approx(3.0, rel=1e-4)


def test_too_few_points_per_budget_is_refused_with_the_count_needed():
    c, n, d, loss = isoflop_points(CHINCHILLA, [1e18, 1e19], per_budget=3)
    keep = np.arange(len(c)) != 0  # budget 1e18 keeps 2 sizes
    with pytest.raises(ValueError, match=r"at least 3 model sizes per budget.*C=1e\+18 has 2"):
        F.approach2(c[keep], n[keep], d[keep], loss[keep])
    with pytest.raises(ValueError, match="at least 2 budgets"):
        F.approach2(c[3:], n[3:], d[3:], loss[3:])
    with pytest.raises(ValueError, match="at least 5 points"):
        F.approach3(n[:4], d[:4], loss[:4])


def test_bootstrap_intervals_cover_the_truth():
    c, n, d, loss = isoflop_points(CHINCHILLA, BUDGETS, noise=0.003, seed=1)
    best = F.approach3(n, d, loss, refine=4)
    b = F.bootstrap(c, n, d, loss, n_boot=20, seed=0, approach3_starts=best["theta"])
    lo, hi = b["approach3"]["alpha"]
    assert lo < hi and lo - 0.03 < CHINCHILLA.alpha < hi + 0.03
    lo, hi = b["approach2"]["a"]
    assert lo < CHINCHILLA.a + 0.03 and hi > CHINCHILLA.a - 0.03


def test_tokens_per_param_at_the_optimum_matches_the_closed_form():
    n, d = CHINCHILLA.optimum(5.76e23)
    assert F.tokens_per_param(CHINCHILLA, 5.76e23) == pytest.approx(d / n)
    # closed form: D/N = (C/6)^(b-a) / G^2, rising with C because b > a
    assert d / n == pytest.approx((5.76e23 / 6) ** (CHINCHILLA.b - CHINCHILLA.a) / CHINCHILLA.G**2, rel=1e-9)
    assert F.tokens_per_param(CHINCHILLA, 5.76e25) > d / n
