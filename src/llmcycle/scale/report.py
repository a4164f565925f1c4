"""`llmcycle scale fit DIR`: read a sweep's finished points, fit Approaches 2 and 3 (fit.py), and write
fit.json, fit.md and three PNGs (isoflop.png, frontier.png, residuals.png).

N is every parameter, the tied embedding counted once (`--params total`, Chinchilla's count) or
without the token embedding (`--params non-embedding`, Kaplan's). At tiny scale the embedding can be
a large share of N, and Pearce & Song (2024, "Reconciling Kaplan and Chinchilla Scaling Laws") show
that leaving it out is what bends Chinchilla's a = 0.5 towards Kaplan's 0.73 there; so Approach 2 is
also reported with the other count, and fit.json says which one the headline uses.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from llmcycle.plan.scaling import CHINCHILLA, EPOCH, KAPLAN, kaplan_derived_exponents, optimum
from llmcycle.atomic import atomic_write_text
from llmcycle.scale import fit as F
from llmcycle.scale.sweep import load_sweep, point_dir, point_result

PARAM_KEYS = {"total": "params", "non-embedding": "non_embedding"}
REFERENCES = {  # a = exponent of N_opt(C), b = of D_opt(C)
    "chinchilla (Hoffmann et al. 2022, Approaches 1-2)": {"a": 0.50, "b": 0.50},
    "chinchilla Approach 3 (unrounded constants)": {"a": CHINCHILLA.a, "b": CHINCHILLA.b},
    "epoch (Besiroglu et al. 2024 refit)": {"a": EPOCH.a, "b": EPOCH.b},
    "kaplan (Kaplan et al. 2020, Fig. 14)": {"a": KAPLAN["n_opt_exp"], "b": 1 - KAPLAN["n_opt_exp"]},
}


def collect(sweep: Path) -> tuple[list[dict], list[str]]:
    """Finished points (with their final held-out loss), and notes on those left out."""
    doc = load_sweep(sweep)
    rows, missing = [], []
    for p in doc["points"]:
        r = point_result(point_dir(sweep, p["name"]))
        if r is None or r["step"] < p["steps"] or r["val_loss"] is None:
            missing.append(p["name"])
            continue
        rows.append({**p, **r})
    notes = [f"{len(missing)} planned point(s) not finished, left out: {', '.join(missing)}"] if missing else []
    return rows, notes


def complete_budgets(rows: list[dict], notes: list[str]) -> list[dict]:
    """Keep only budgets with enough finished points for a parabola."""
    count = {}
    for r in rows:
        count[r["budget"]] = count.get(r["budget"], 0) + 1
    short = {c: k for c, k in count.items() if k < F.MIN_POINTS_PER_BUDGET}
    if short:
        notes.append("budget(s) with too few finished points left out: " + ", ".join(f"{c:.3g} ({k})" for c, k in short.items()))
    return [r for r in rows if r["budget"] not in short]


def fit_rows(rows: list[dict], params: str = "total", n_boot: int = 200, seed: int = 0, refine: int = 64) -> dict:
    """Approaches 2 and 3 with bootstrap intervals on the rows' (budget, N, tokens, val_loss)."""
    key = PARAM_KEYS[params]
    c = np.array([r["budget"] for r in rows], float)
    n = np.array([r[key] for r in rows], float)
    d = np.array([r["tokens"] for r in rows], float)
    loss = np.array([r["val_loss"] for r in rows], float)
    a2 = F.approach2(c, n, d, loss)
    other = [k for k in PARAM_KEYS if k != params][0]
    a2_other = F.approach2(c, np.array([r[PARAM_KEYS[other]] for r in rows], float), d, loss)
    a3 = F.approach3(n, d, loss, refine=refine)
    fit3 = a3.pop("fit")
    a3["theta"] = [float(v) for v in a3["theta"]]
    boot = F.bootstrap(c, n, d, loss, n_boot, seed, approach3_starts=np.array(a3["theta"]))
    pred = F.predict(fit3, n, d)
    budgets = sorted(set(c.tolist()))
    return {
        "params": params, "n_points": len(rows), "budgets": budgets,
        "approach2": {**a2, "interval": boot["approach2"], "bootstrap_skipped": boot["approach2_skipped"],
                      f"a_with_{other.replace('-', '_')}_params": a2_other["a"]},
        "approach3": {**a3, "interval": boot["approach3"],
                      "tokens_per_param": {f"{b:.3g}": F.tokens_per_param(fit3, b) for b in budgets},
                      "rms_log_residual": float(np.sqrt(np.mean((np.log(loss) - np.log(pred)) ** 2)))},
        "bootstrap": n_boot, "references": REFERENCES, "kaplan_derived": kaplan_derived_exponents(),
        "points": [{k: r[k] for k in ("name", "budget", "rung", "params", "non_embedding", "tokens", "val_loss")}
                   | {"predicted_loss": float(p)} for r, p in zip(rows, pred)],
        "_fit3": fit3,
    }


def _ci(iv) -> str:
    return f"[{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "n/a"


def markdown(res: dict, notes: list[str]) -> str:
    a2, a3 = res["approach2"], res["approach3"]
    lines = [
        "# Scaling-law fit (`llmcycle scale fit`)", "",
        f"{res['n_points']} finished points over {len(res['budgets'])} budgets "
        f"({', '.join(f'{b:.3g}' for b in res['budgets'])} FLOPs); N = **{res['params']}** parameters; "
        f"95 % bootstrap intervals from {res['bootstrap']} resamples.", "",
        "| exponent | Approach 2 (IsoFLOP) | Approach 3 (L(N, D)) |", "|---|---|---|",
        f"| a (N_opt ~ C^a) | {a2['a']:.3f} {_ci(a2['interval']['a'])} | {a3['a']:.3f} {_ci(a3['interval']['a'] if a3['interval'] else None)} |",
        f"| b (D_opt ~ C^b) | {a2['b']:.3f} {_ci(a2['interval']['b'])} | {a3['b']:.3f} {_ci(a3['interval']['b'] if a3['interval'] else None)} |",
        "", f"Budgets whose IsoFLOP vertex lies inside the sizes tried: {len(a2['interior_budgets'])} of {len(a2['minima'])}"
        + (f"; a from those alone: {a2['a_interior_only']:.3f}" if a2["a_interior_only"] is not None else "")
        + f". Approach 2 with the other parameter count: a = {next(v for k, v in a2.items() if k.startswith('a_with_')):.3f}.",
        "", "Approach 3: " + ", ".join(f"{k} = {a3[k]:.4g}" + (f" {_ci(a3['interval'][k])}" if k in a3['interval'] else "")
                                       for k in ("E", "A", "B", "alpha", "beta"))
        + f"; RMS log residual {a3['rms_log_residual']:.4f}.", "",
        "| budget (FLOPs) | N_opt (A2) | D_opt (A2) | tokens/param (A2) | min loss | vertex inside sizes | tokens/param (A3) |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in a2["minima"]:
        tpp3 = a3["tokens_per_param"][f"{m['budget']:.3g}"]
        lines.append(f"| {m['budget']:.3g} | {m['n_opt']:,.0f} | {m['d_opt']:,.0f} | {m['tokens_per_param']:.1f} | "
                     f"{m['loss']:.4f} | {'yes' if m['interior'] else 'no'} | {tpp3:.1f} |")
    lines += ["", "References (a, b): " + "; ".join(f"{k}: {v['a']:.3f}, {v['b']:.3f}" for k, v in res["references"].items()),
              f"Kaplan's derived alpha_C^min = {res['kaplan_derived']['alpha_c_min']:.4f} (Eq. 1.8 from alpha_S, alpha_B, alpha_N).",
              "", "![IsoFLOP curves](isoflop.png) ![frontier](frontier.png) ![residuals](residuals.png)"]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plots(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    key = PARAM_KEYS[res["params"]]
    pts, minima = res["points"], res["approach2"]["minima"]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(minima)))
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for m, col in zip(minima, colors):
        ps = [p for p in pts if p["budget"] == m["budget"]]
        x = np.array([p[key] for p in ps], float)
        ax.scatter(x, [p["val_loss"] for p in ps], color=col, label=f"C = {m['budget']:.2g}")
        grid = np.geomspace(x.min() / 1.3, x.max() * 1.3, 60)
        c2, c1, c0 = m["coef"]
        ax.plot(grid, c2 * np.log(grid) ** 2 + c1 * np.log(grid) + c0, color=col, lw=1)
        ax.scatter([m["n_opt"]], [m["loss"]], marker="*", s=120, color=col, edgecolor="k", zorder=5)
    ax.set(xscale="log", xlabel=f"parameters N ({res['params']})", ylabel="held-out loss (nats/token)",
           title="IsoFLOP profiles (stars: parabola minima)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "isoflop.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.2))
    cs = np.array([m["budget"] for m in minima])
    cg = np.geomspace(cs.min() / 2, cs.max() * 2, 50)
    a2 = res["approach2"]
    ax.scatter(cs, [m["n_opt"] for m in minima], color="k", zorder=5, label="IsoFLOP minima")
    ax.plot(cg, a2["k_n"] * cg ** a2["a"], "k-", label=f"lab, Approach 2: a = {a2['a']:.2f}")
    fit3 = res["_fit3"]
    if math.isfinite(fit3.a):
        ax.plot(cg, [fit3.optimum(c)[0] for c in cg], "k--", label=f"lab, Approach 3: a = {fit3.a:.2f}")
    mid_c, mid_n = math.exp(np.log(cs).mean()), math.exp(np.mean(np.log([m["n_opt"] for m in minima])))
    for slope, name, style in ((0.50, "Chinchilla slope a = 0.50", "C0:"), (0.73, "Kaplan slope a = 0.73", "C3:")):
        ax.plot(cg, mid_n * (cg / mid_c) ** slope, style, label=name + " (through the lab's middle)")
    ax.plot(cg, [optimum(c, "chinchilla")[0] for c in cg], "C0-", alpha=0.5, label="Chinchilla's own fit N_opt(C)")
    ax.set(xscale="log", yscale="log", xlabel="training compute C (FLOPs)", ylabel="compute-optimal N",
           title="Compute-optimal frontier")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for m, col in zip(minima, colors):
        ps = [p for p in pts if p["budget"] == m["budget"]]
        ax.scatter([p[key] for p in ps], [math.log(p["val_loss"]) - math.log(p["predicted_loss"]) for p in ps],
                   color=col, label=f"C = {m['budget']:.2g}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel=f"parameters N ({res['params']})", ylabel="log L - log L_fit",
           title="Approach 3 residuals")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "residuals.png", dpi=110)
    plt.close(fig)


def fit_sweep(sweep: Path, out: Path, params: str = "total", bootstrap: int = 200, seed: int = 0,
              complete_only: bool = False, refine: int = 64) -> dict:
    """The whole `scale fit`: collect, fit, write fit.json / fit.md / PNGs into `out`."""
    rows, notes = collect(Path(sweep))
    if complete_only:
        rows = complete_budgets(rows, notes)
    if not rows:
        raise ValueError(f"no finished points in {sweep}: run `llmcycle scale sweep --out {sweep}` (with --resume) first")
    res = fit_rows(rows, params, bootstrap, seed, refine)
    doc = load_sweep(Path(sweep))
    res["corpus"], res["seq_len"] = doc["corpus"]["data"], doc["settings"]["seq_len"]  # what `llmcycle run` checks
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots(res, out)
    md = markdown(res, notes)
    res.pop("_fit3")
    res["notes"] = notes
    atomic_write_text(out / "fit.json", json.dumps(res, indent=2) + "\n")
    atomic_write_text(out / "fit.md", md)
    a2, a3 = res["approach2"], res["approach3"]
    res["summary"] = (f"Approach 2: a = {a2['a']:.3f} {_ci(a2['interval']['a'])}, b = {a2['b']:.3f} {_ci(a2['interval']['b'])}; "
                      f"Approach 3: alpha = {a3['alpha']:.3f}, beta = {a3['beta']:.3f}, E = {a3['E']:.3f}, a = {a3['a']:.3f}"
                      + ("\n" + "\n".join(f"note: {n}" for n in notes) if notes else ""))
    return res
