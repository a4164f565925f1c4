"""Scaling laws as small pure functions, each naming its paper.

- Chinchilla (Hoffmann et al. 2022): ~20 tokens/parameter (Approach 1, Table 3) and the parametric
  fit L(N, D) = E + A/N^alpha + B/D^beta (Approach 3), with the printed and the unrounded constants.
- Epoch AI's replication (Besiroglu et al. 2024): refit constants.
- Kaplan et al. 2020: L(N), L(D), L(N, D) (Eq. 1.5), L(C_min) and N_opt(C) ~ C^0.73.
- Data-constrained scaling (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"):
  repeated tokens are worth less; up to ~4 epochs is nearly as good as fresh data.
- Inference-aware optimum (Sardana et al. 2023, "Beyond Chinchilla-Optimal"): the N, D that reach a
  loss with the fewest training + inference FLOPs, with the paper's constants (SARDANA).
- Kaplan's derived compute exponent alpha_C^min (Eq. 1.8).
The compute-optimal split assumes C = 6ND throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmcycle.plan.compute import PF_DAY


@dataclass(frozen=True)
class Fit:
    """L(N, D) = E + A / N^alpha + B / D^beta."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str

    def loss(self, n: float, d: float) -> float:
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    @property
    def G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

    @property
    def a(self) -> float:  # N_opt ~ C^a
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:  # D_opt ~ C^b
        return self.alpha / (self.alpha + self.beta)

    def optimum(self, flops: float) -> tuple[float, float]:
        """Closed form under C = 6ND (Hoffmann et al. 2022, Eq. 4): N = G (C/6)^a, D = (C/6)^b / G."""
        return self.G * (flops / 6) ** self.a, (flops / 6) ** self.b / self.G


CHINCHILLA_PRINTED = Fit("chinchilla-printed", 1.69, 406.4, 410.7, 0.34, 0.28, "Hoffmann et al. 2022, Appendix D.2, as printed")
CHINCHILLA = Fit("chinchilla", 1.69337, 406.401, 410.723, 0.33917084, 0.2849083,
                 "Hoffmann et al. 2022, unrounded constants from the paper's TeX source")
EPOCH = Fit("epoch", 1.82, 482.0, 2085.4, 0.3478, 0.3658, "Besiroglu et al. 2024 (Epoch AI), Chinchilla replication")
# Sardana et al. 2023/2024 ("Beyond Chinchilla-Optimal") use Chinchilla's Approach 3 with alpha = 0.336, beta = 0.283
# (the defaults of their code, github.com/nikhilsardana/beyond-chinchilla, utils.ChinchillaConstants; de Vries 2023 used
# the same, as closer to Chinchilla's Table A3 than the rounded 0.34 / 0.28). Their Figure 1 numbers need these exponents.
SARDANA = Fit("sardana", 1.69, 406.4, 410.7, 0.336, 0.283,
              "Chinchilla Approach 3 as Sardana et al. 2023 use it (alpha 0.336, beta 0.283)")
# Muennighoff et al. 2023 fit on C4 (datablations README): log-space constants a, b, e exponentiated.
MUENNIGHOFF = Fit("muennighoff", math.exp(0.6254804), math.exp(6.255414), math.exp(7.3049974), 0.3526596, 0.3526596,
                  "Muennighoff et al. 2023, C4 fit (huggingface/datablations)")
R_D_STAR, R_N_STAR = 15.387756, 5.309743  # Muennighoff et al. 2023: decay constants of repeated data / excess params
FITS = {f.name: f for f in (CHINCHILLA, CHINCHILLA_PRINTED, EPOCH, SARDANA)}
LAWS = ("chinchilla-20x", "chinchilla", "chinchilla-printed", "epoch", "kaplan")
TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022, Approach 1 (Table 3)

# Kaplan et al. 2020 (sec. 1.2, Eq. 1.1-1.5; Figure 14): N non-embedding params, D tokens, C in PF-days.
KAPLAN = dict(alpha_n=0.076, n_c=8.8e13, alpha_d=0.095, d_c=5.4e13, alpha_c=0.050, c_c=3.1e8, n_opt_coef=1.3e9, n_opt_exp=0.73)


def get_fit(name: str) -> Fit:
    if name not in FITS:
        raise ValueError(f"unknown fit {name!r}; choose one of {', '.join(FITS)}")
    return FITS[name]


def chinchilla_rule(flops: float, tokens_per_param: float = TOKENS_PER_PARAM) -> tuple[float, float]:
    """C = 6 N (r N)  =>  N = sqrt(C / (6 r)), D = r N."""
    n = math.sqrt(flops / (6 * tokens_per_param))
    return n, tokens_per_param * n


def kaplan_loss_n(n: float) -> float:
    return (KAPLAN["n_c"] / n) ** KAPLAN["alpha_n"]


def kaplan_loss_d(d: float) -> float:
    return (KAPLAN["d_c"] / d) ** KAPLAN["alpha_d"]


def kaplan_loss_nd(n: float, d: float) -> float:
    """Kaplan Eq. 1.5: L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D."""
    k = KAPLAN
    return ((k["n_c"] / n) ** (k["alpha_n"] / k["alpha_d"]) + k["d_c"] / d) ** k["alpha_d"]


def kaplan_loss_c(flops: float) -> float:
    """Kaplan Eq. 1.3: L = (C_c / C_min)^alpha_C, C in PF-days."""
    return (KAPLAN["c_c"] / (flops / PF_DAY)) ** KAPLAN["alpha_c"]


def kaplan_optimum(flops: float) -> tuple[float, float]:
    """Kaplan Figure 14: N_opt = 1.3e9 (C_min / PF-day)^0.73 non-embedding params; D = C / (6N)."""
    n = KAPLAN["n_opt_coef"] * (flops / PF_DAY) ** KAPLAN["n_opt_exp"]
    return n, flops / (6 * n)


def optimum(flops: float, law: str = "chinchilla") -> tuple[float, float]:
    """Compute-optimal (params, tokens) for `flops` under `law` (one of LAWS)."""
    if flops <= 0:
        raise ValueError(f"compute budget must be > 0 FLOPs, got {flops}")
    if law == "chinchilla-20x":
        return chinchilla_rule(flops)
    if law == "kaplan":
        return kaplan_optimum(flops)
    if law in FITS:
        return FITS[law].optimum(flops)
    raise ValueError(f"unknown scaling law {law!r}; choose one of {', '.join(LAWS)}")


def params_for_tokens(tokens: float, law: str = "chinchilla") -> float:
    """The model for which `tokens` is the compute-optimal count: bisection on log C (D_opt rises with C)."""
    lo, hi = 1.0, 1e40
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if optimum(mid, law)[1] < tokens else (lo, mid)
    return optimum(math.sqrt(lo * hi), law)[0]


# ------------------------------------------------------------------ data-constrained (Muennighoff et al. 2023)


def effective_tokens(tokens: float, unique: float) -> float:
    """D' = U + U R*_D (1 - exp(-R_D / R*_D)), R_D = epochs - 1: repeated tokens decay in value."""
    r = max(tokens / unique - 1, 0.0)
    return unique + unique * R_D_STAR * (1 - math.exp(-r / R_D_STAR))


def effective_params(n: float, unique: float, fit: Fit = MUENNIGHOFF) -> float:
    """N' likewise: parameters beyond those compute-optimal for U unique tokens decay in value (R*_N)."""
    u_n = min(n, (unique * fit.G) ** (fit.beta / fit.alpha) * fit.G)
    r = max(n / u_n - 1, 0.0)
    return u_n + u_n * R_N_STAR * (1 - math.exp(-r / R_N_STAR))


def data_constrained_loss(n: float, tokens: float, unique: float, fit: Fit = MUENNIGHOFF) -> float:
    """Muennighoff et al. 2023, Eq. 5: L = E + A / N'^alpha + B / D'^beta."""
    if unique > tokens:
        unique = tokens
    return fit.E + fit.A / effective_params(n, unique, fit) ** fit.alpha + fit.B / effective_tokens(tokens, unique) ** fit.beta


def data_constrained_optimum(flops: float, unique: float, fit: Fit = MUENNIGHOFF) -> tuple[float, float]:
    """(N, D) minimising the data-constrained loss under C = 6ND: golden-section search on log N."""
    f = lambda ln: data_constrained_loss(math.exp(ln), flops / (6 * math.exp(ln)), unique, fit)  # noqa: E731
    lo, hi = math.log(1e3), math.log(flops / 6 / 1e3)
    g = (math.sqrt(5) - 1) / 2
    for _ in range(200):
        x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
        lo, hi = (lo, x2) if f(x1) < f(x2) else (x1, hi)
    n = math.exp((lo + hi) / 2)
    return n, flops / (6 * n)


def data_plan(flops: float, unique_tokens: float, law: str = "chinchilla", max_epochs: float = 4.0) -> dict:
    """Is the data the bottleneck for this budget? If the compute-optimal token count needs more
    than `max_epochs` passes over the unique data (Muennighoff: up to ~4 epochs is nearly as good
    as fresh data), recommend the largest model for which max_epochs x U tokens is compute-optimal,
    as BloombergGPT had to decide (Wu et al. 2023)."""
    if unique_tokens <= 0:
        raise ValueError(f"unique tokens must be > 0, got {unique_tokens}")
    n_opt, d_opt = optimum(flops, law)
    epochs = d_opt / unique_tokens
    out = {"law": law, "compute_optimal_params": n_opt, "compute_optimal_tokens": d_opt, "epochs_needed": epochs,
           "max_epochs": max_epochs, "unique_tokens": unique_tokens}
    if epochs <= 1:
        out.update(verdict="enough data", params=n_opt, tokens=d_opt, epochs=epochs, flops_used=flops)
    elif epochs <= max_epochs:
        out.update(verdict="repeat the data", params=n_opt, tokens=d_opt, epochs=epochs, flops_used=flops)
    else:
        tokens = max_epochs * unique_tokens
        n = params_for_tokens(tokens, law)
        out.update(verdict="data-bound", params=n, tokens=tokens, epochs=max_epochs, flops_used=6 * n * tokens,
                   spend_all_params=flops / (6 * tokens))
    dc_n, dc_d = data_constrained_optimum(flops, unique_tokens)
    out.update(muennighoff_params=dc_n, muennighoff_tokens=dc_d, muennighoff_epochs=dc_d / unique_tokens,
               effective_tokens=effective_tokens(out["tokens"], unique_tokens))
    return out


# ------------------------------------------------------------------ added for issue 15: derived and inference-aware laws

KAPLAN_TABLE5 = dict(alpha_s=0.76, alpha_b=0.21, alpha_n=0.076)  # Kaplan et al. 2020, Table 5 / Eq. 1.4-1.6


def kaplan_derived_exponents(alpha_s: float = KAPLAN_TABLE5["alpha_s"], alpha_b: float = KAPLAN_TABLE5["alpha_b"],
                             alpha_n: float = KAPLAN_TABLE5["alpha_n"]) -> dict:
    """Kaplan et al. 2020, Eq. 1.8 (derived in Appendix B.2, Eq. B.7):
    alpha_C^min = 1 / (1/alpha_S + 1/alpha_B + 1/alpha_N), and the compute-efficient allocation
    N ~ C^(alpha_C^min/alpha_N), B ~ C^(alpha_C^min/alpha_B), S ~ C^(alpha_C^min/alpha_S).
    With Table 5's exponents this gives 0.052 (Eq. B.7 prints 0.052, Eq. 1.8 / 6.4 round to 0.054) and
    N ~ C^0.68; the directly fitted frontier is C^0.73 with alpha_C^min = 0.050 (Eq. 1.3, Fig. 14)."""
    c = 1 / (1 / alpha_s + 1 / alpha_b + 1 / alpha_n)
    return {"alpha_c_min": c, "n_exponent": c / alpha_n, "batch_exponent": c / alpha_b, "steps_exponent": c / alpha_s,
            "alpha_s": alpha_s, "alpha_b": alpha_b, "alpha_n": alpha_n,
            "fitted_alpha_c_min": KAPLAN["alpha_c"], "fitted_n_exponent": KAPLAN["n_opt_exp"]}


def tokens_for_loss(n: float, target_loss: float, fit: Fit) -> float:
    """Training tokens D with L(N, D) = target_loss (inf when N alone cannot reach it)."""
    gap = target_loss - fit.E - fit.A / n**fit.alpha
    return math.inf if gap <= 0 else (fit.B / gap) ** (1 / fit.beta)


def inference_optimum(target_loss: float, inference_tokens: float, fit: Fit = SARDANA) -> dict:
    """Sardana et al. 2023, "Beyond Chinchilla-Optimal" (Eq. 3): the (N, D_tr) that minimise lifetime
    FLOPs 6 N D_tr + 2 N D_inf (D_inf: prompt + generated tokens over all requests) subject to
    L(N, D_tr) = target_loss. Default fit: the paper's constants (SARDANA, alpha 0.336, beta 0.283).

    Setting the Lagrangian's derivatives to zero and eliminating A / N^alpha leaves one equation in D_tr,
        B (1 + beta/alpha) D^-beta + (beta B D_inf / (3 alpha)) D^-(beta+1) = target - E,
    the equation the authors solve with Newton's method (model_calculator.compute_optimal_train_tokens).
    Its left side falls monotonically in D, so bisection on log D finds the one root; N follows from
    the loss constraint. With D_inf = 0 it is Chinchilla's compute-optimal point for that loss (closed
    form N = (A (1 + alpha/beta) / (target - E))^(1/alpha)), the baseline the result is compared with.
    Returns both points, their lifetime FLOPs, and the shift (N and D ratios, FLOPs saved)."""
    if target_loss <= fit.E:
        raise ValueError(f"target loss {target_loss} is at or below the fit's irreducible loss E = {fit.E}; "
                         "no model reaches it")
    if not 0 <= inference_tokens < math.inf:
        raise ValueError(f"inference tokens must be >= 0, got {inference_tokens}")
    gap = target_loss - fit.E
    c1, c2 = fit.B * (1 + fit.beta / fit.alpha), fit.beta * fit.B * inference_tokens / (3 * fit.alpha)

    def stationary_tokens(c2: float) -> float:
        g = lambda ld: c1 * math.exp(-fit.beta * ld) + c2 * math.exp(-(fit.beta + 1) * ld) - gap  # noqa: E731
        lo, hi = 0.0, 1.0  # log D bracket: g(lo) > 0 > g(hi)
        while g(lo) <= 0:
            lo -= 10.0
        while g(hi) >= 0:
            hi += 10.0
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if g(mid) > 0 else (lo, mid)
        return math.exp((lo + hi) / 2)

    def params_for(d: float) -> float:
        return (fit.A / (gap - fit.B / d**fit.beta)) ** (1 / fit.alpha)

    d, d0 = stationary_tokens(c2), stationary_tokens(0.0)
    n, n0 = params_for(d), params_for(d0)
    flops, flops0 = 6 * n * d + 2 * n * inference_tokens, 6 * n0 * d0 + 2 * n0 * inference_tokens
    return {"fit": fit.name, "target_loss": target_loss, "inference_tokens": inference_tokens,
            "params": n, "train_tokens": d, "tokens_per_param": d / n, "train_flops": 6 * n * d,
            "inference_flops": 2 * n * inference_tokens, "total_flops": flops,
            "chinchilla_params": n0, "chinchilla_train_tokens": d0, "chinchilla_tokens_per_param": d0 / n0,
            "chinchilla_train_flops": 6 * n0 * d0, "chinchilla_total_flops": flops0, "params_ratio": n / n0,
            "tokens_ratio": d / d0, "flops_ratio": flops / flops0, "flops_saved": 1 - flops / flops0,
            "flops_saved_abs": flops0 - flops}


def chinchilla_point_for_params(n: float, fit: Fit = SARDANA) -> dict:
    """The compute-optimal (training-only) run of an N-parameter model under `fit`: Eq. 4 inverted,
    C = 6 (N / G)^(1/a), D = C / (6N), and its loss: the "Chinchilla-style N model" of Sardana et al."""
    if not 0 < n < math.inf:
        raise ValueError(f"parameters must be > 0, got {n}")
    flops = 6 * (n / fit.G) ** (1 / fit.a)
    d = flops / (6 * n)
    return {"params": n, "tokens": d, "flops": flops, "loss": fit.loss(n, d)}
