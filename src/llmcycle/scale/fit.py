"""Chinchilla's Approaches 2 and 3 (Hoffmann et al. 2022) as pure functions of (C, N, D, loss) points.

Approach 2 (IsoFLOP profiles): per compute budget C, a parabola of loss in log N; its vertex is
N_opt(C), and D_opt(C) is read off the same budget's (log N, log D) line (D = C / FLOPs-per-token(N)
exactly, so attention FLOPs are honoured, not assumed away by C = 6ND). Power laws
N_opt = k_N C^a and D_opt = k_D C^b by least squares in log-log.

Approach 3 (parametric): L(N, D) = E + A / N^alpha + B / D^beta, fitted as Hoffmann et al. (App. D.2)
and Epoch AI's replication (Besiroglu et al. 2024) do: minimise
    sum_i Huber_delta( LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i ),  delta = 1e-3
with A = exp(a), B = exp(b), E = exp(e), by L-BFGS from a grid of starts (Hoffmann et al.'s 4,500),
keeping the best. Running L-BFGS from all 4,500 takes minutes on a shared CPU, so every start is first
scored (one vectorised pass) and L-BFGS runs from the best `refine` of them (default 64); the
synthetic-recovery tests check this finds the generating constants.
a = beta / (alpha + beta), b = alpha / (alpha + beta) follow (C = 6ND).

Intervals: nonparametric bootstrap (points resampled with replacement; within each budget for
Approach 2), percentiles 2.5-97.5.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
from scipy.optimize import minimize

from llmcycle.plan.scaling import Fit

MIN_POINTS_PER_BUDGET = 3  # a parabola has three coefficients
MIN_BUDGETS = 2  # a power law has two
HUBER_DELTA = 1e-3
# Hoffmann et al. 2022, App. D.2 (and Epoch AI's replication): the initialisation grid.
HOFFMANN_GRID = {"a": [0, 5, 10, 15, 20, 25], "b": [0, 5, 10, 15, 20, 25], "e": [-1, -0.5, 0, 0.5, 1],
                 "alpha": [0, 0.5, 1, 1.5, 2], "beta": [0, 0.5, 1, 1.5, 2]}
COARSE_GRID = {"a": [0, 10, 20], "b": [0, 10, 20], "e": [-1, 0, 1], "alpha": [0.25, 1], "beta": [0.25, 1]}


# ------------------------------------------------------------------ Approach 2


def by_budget(budgets, n, d, loss) -> dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    groups = defaultdict(list)
    for c, ni, di, li in zip(budgets, n, d, loss):
        groups[float(c)].append((ni, di, li))
    return {c: tuple(np.array(col, dtype=float) for col in zip(*rows)) for c, rows in sorted(groups.items())}


def check_counts(groups: dict) -> None:
    """Refuse budgets with fewer distinct model sizes than a parabola needs, naming the count."""
    short = {c: len(set(g[0])) for c, g in groups.items() if len(set(g[0])) < MIN_POINTS_PER_BUDGET}
    if short:
        said = ", ".join(f"C={c:.3g} has {k}" for c, k in short.items())
        raise ValueError(f"Approach 2 needs at least {MIN_POINTS_PER_BUDGET} model sizes per budget (a parabola in log N): "
                         f"{said}. Sweep with --sizes >= {MIN_POINTS_PER_BUDGET} (or finish the missing points)")
    if len(groups) < MIN_BUDGETS:
        raise ValueError(f"a power law N_opt ~ C^a needs at least {MIN_BUDGETS} budgets, got {len(groups)}")


def isoflop_minimum(n: np.ndarray, d: np.ndarray, loss: np.ndarray) -> dict:
    """Vertex of loss = c2 (log N)^2 + c1 log N + c0 for one budget, and D there."""
    x = np.log(n)
    c2, c1, c0 = np.polyfit(x, loss, 2)
    s, i = np.polyfit(x, np.log(d), 1)  # D = C / f(N): a line in log-log
    if c2 <= 0:
        x0 = x[np.argmin(loss)]
        return {"coef": [c2, c1, c0], "log_n": x0, "n_opt": math.exp(x0), "d_opt": math.exp(s * x0 + i),
                "loss": float(np.min(loss)), "interior": False}
    x0 = -c1 / (2 * c2)
    return {"coef": [c2, c1, c0], "log_n": x0, "n_opt": math.exp(x0), "d_opt": math.exp(s * x0 + i),
            "loss": c0 - c1**2 / (4 * c2), "interior": bool(x.min() <= x0 <= x.max())}


def power_law(c: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """y = k C^p by least squares on logs: (p, k)."""
    p, logk = np.polyfit(np.log(c), np.log(y), 1)
    return float(p), float(math.exp(logk))


def approach2(budgets, n, d, loss) -> dict:
    groups = by_budget(budgets, n, d, loss)
    check_counts(groups)
    minima = {c: isoflop_minimum(*g) for c, g in groups.items()}
    cs = np.array(list(minima))
    a, k_n = power_law(cs, np.array([m["n_opt"] for m in minima.values()]))
    b, k_d = power_law(cs, np.array([m["d_opt"] for m in minima.values()]))
    inside = [c for c, m in minima.items() if m["interior"]]  # vertices within the sizes tried, not extrapolated
    a_in = power_law(np.array(inside), np.array([minima[c]["n_opt"] for c in inside]))[0] if len(inside) >= 2 else None
    return {"a": a, "k_n": k_n, "b": b, "k_d": k_d, "a_interior_only": a_in, "interior_budgets": inside,
            "minima": [{"budget": c, **{k: v for k, v in m.items() if k != "log_n"},
                        "tokens_per_param": m["d_opt"] / m["n_opt"]} for c, m in minima.items()]}


# ------------------------------------------------------------------ Approach 3


def _objective(theta: np.ndarray, x: np.ndarray, y: np.ndarray, log_l: np.ndarray, delta: float):
    """Huber loss of the log-sum-exp predictor and its gradient; theta = (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    u = np.stack([a - alpha * x, b - beta * y, np.full_like(x, e)])  # (3, n)
    m = u.max(axis=0)
    w = np.exp(u - m)
    s = w.sum(axis=0)
    r = m + np.log(s) - log_l  # residual in log loss
    w /= s
    small = np.abs(r) <= delta
    h = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
    g = np.where(small, r, delta * np.sign(r))
    grad = np.array([(g * w[0]).sum(), (g * w[1]).sum(), (g * w[2]).sum(), -(g * w[0] * x).sum(), -(g * w[1] * y).sum()])
    # scaled by 1/delta^2 so L-BFGS's tolerances act on O(1) numbers; the minimiser is unchanged
    return h.sum() / delta**2, grad / delta**2


def grid_starts(grid: dict) -> np.ndarray:
    return np.array(list(itertools.product(grid["a"], grid["b"], grid["e"], grid["alpha"], grid["beta"])), dtype=float)


def _score(starts: np.ndarray, x: np.ndarray, y: np.ndarray, log_l: np.ndarray, delta: float) -> np.ndarray:
    """The Huber objective at every start at once: (n_starts,)."""
    a, b, e, alpha, beta = (starts[:, i:i + 1] for i in range(5))
    u = np.stack([a - alpha * x, b - beta * y, np.broadcast_to(e, (len(starts), len(x)))])  # (3, S, n)
    r = np.logaddexp.reduce(u, axis=0) - log_l
    return np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)).sum(axis=1)


def approach3(n, d, loss, starts: np.ndarray | None = None, delta: float = HUBER_DELTA, refine: int = 64) -> dict:
    """Best L-BFGS solution from the `refine` best-scoring of `starts` (default: Hoffmann et al.'s grid)."""
    x, y, log_l = np.log(np.asarray(n, float)), np.log(np.asarray(d, float)), np.log(np.asarray(loss, float))
    if len(x) < 5:
        raise ValueError(f"Approach 3 fits 5 parameters (E, A, B, alpha, beta): it needs at least 5 points, got {len(x)}")
    starts = grid_starts(HOFFMANN_GRID) if starts is None else np.atleast_2d(np.asarray(starts, float))
    n_starts = len(starts)
    if n_starts > refine:
        starts = starts[np.argsort(_score(starts, x, y, log_l, delta))[:refine]]
    best = None
    for th0 in starts:
        res = minimize(_objective, th0, args=(x, y, log_l, delta), jac=True, method="L-BFGS-B",
                       options={"maxiter": 500, "ftol": 1e-12, "gtol": 1e-9})
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, alpha, beta = best.x
    fit = Fit("lab", math.exp(e), math.exp(a), math.exp(b), float(alpha), float(beta), "llmcycle scale fit, Approach 3")
    return {"fit": fit, "theta": best.x, "objective": float(best.fun * delta**2), "starts": n_starts, "refined": len(starts),
            "E": fit.E, "A": fit.A, "B": fit.B, "alpha": fit.alpha, "beta": fit.beta,
            "a": fit.a if alpha + beta > 0 else float("nan"), "b": fit.b if alpha + beta > 0 else float("nan")}


def predict(fit: Fit, n, d) -> np.ndarray:
    return fit.E + fit.A / np.asarray(n, float) ** fit.alpha + fit.B / np.asarray(d, float) ** fit.beta


def tokens_per_param(fit: Fit, flops: float) -> float:
    """D_opt / N_opt at compute C under C = 6ND (Hoffmann et al. Eq. 4)."""
    n, d = fit.optimum(flops)
    return d / n


# ------------------------------------------------------------------ bootstrap


def interval(samples: list[float]) -> list[float] | None:
    s = [v for v in samples if math.isfinite(v)]
    return [float(np.percentile(s, 2.5)), float(np.percentile(s, 97.5))] if len(s) >= 10 else None


def bootstrap(budgets, n, d, loss, n_boot: int = 200, seed: int = 0, approach3_starts: np.ndarray | None = None) -> dict:
    """Percentile intervals of a, b (Approach 2, resampling within budgets) and of E, alpha, beta, a, b
    (Approach 3, resampling all points, each refit started from `approach3_starts`)."""
    rng = np.random.default_rng(seed)
    budgets, n, d, loss = (np.asarray(v, float) for v in (budgets, n, d, loss))
    idx_by_c = [np.flatnonzero(budgets == c) for c in np.unique(budgets)]
    a2 = {"a": [], "b": []}
    a3 = {k: [] for k in ("E", "alpha", "beta", "a", "b")}
    skipped = 0
    for _ in range(n_boot):
        take = np.concatenate([rng.choice(ix, len(ix)) for ix in idx_by_c])
        try:
            r = approach2(budgets[take], n[take], d[take], loss[take])
            a2["a"].append(r["a"])
            a2["b"].append(r["b"])
        except (ValueError, np.linalg.LinAlgError):
            skipped += 1  # a resample with fewer than 3 distinct sizes in a budget has no parabola
        if approach3_starts is not None:
            take = rng.choice(len(n), len(n))
            r3 = approach3(n[take], d[take], loss[take], approach3_starts)
            for k in a3:
                a3[k].append(r3[k])
    out = {"n": n_boot, "approach2_skipped": skipped, "approach2": {k: interval(v) for k, v in a2.items()}}
    if approach3_starts is not None:
        out["approach3"] = {k: interval(v) for k, v in a3.items()}
    return out
