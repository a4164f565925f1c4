"""Size a decoder for a wall-clock budget from a compute-optimal rule (`llmcycle run`'s model).

    measured FLOP/s on this machine (a few timed training steps) x budget seconds -> C
    C -> N_opt by the lab's own fit (`llmcycle scale fit`'s Approach 2 frontier N = k C^a) when that
         fit was measured on the same corpus, tokenizer and sequence length; else Chinchilla's
         (Hoffmann et al. 2022, unrounded Approach 3 constants, plan/scaling.py)
    N_opt -> the nearest model of the sweep's ladder (scale/shapes.py)

The run then trains under the time budget as before; its report compares the loss reached with the
rule's prediction (the lab fit's L(N, D); Chinchilla's L is in nats of MassiveText tokens, so for
another corpus and tokenizer its prediction is shown only as a reference, not as a target).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from llmcycle.config import DataConfig, ModelConfig
from llmcycle.plan.scaling import CHINCHILLA, Fit, optimum
from llmcycle.scale.shapes import ladder

EVAL_SHARE = 0.1  # of a time budget spent evaluating and checkpointing rather than training
MATCH_KEYS = ("source", "tokenizer", "vocab_size", "max_bytes", "include", "exclude", "mix")


def measure_flops_per_second(model: ModelConfig, seq_len: int, batch: int, steps: int = 3) -> float:
    """Training FLOP/s of `model` here: one warm-up and `steps` timed AdamW steps on random tokens."""
    from llmcycle.models import build_model
    from llmcycle.models.accounting import flops_per_token

    net = build_model(model)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    ids = torch.randint(0, model.vocab_size, (batch, seq_len + 1), generator=torch.Generator().manual_seed(0))
    elapsed = 0.0
    for i in range(steps + 1):
        t0 = time.perf_counter()
        _, loss = net(ids[:, :-1], ids[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            elapsed += time.perf_counter() - t0
    return flops_per_token(model, seq_len, net) * batch * seq_len * steps / elapsed


def load_lab_fit(path: Path | None, data: DataConfig, seq_len: int) -> tuple[dict | None, str]:
    """The lab fit at `path` if it applies to this run's data, with the reason it does or does not."""
    if path is None:
        return None, "no lab fit given (llmcycle scale fit writes one)"
    path = Path(path)
    if path.is_dir():
        path = path / "fit.json"
    if not path.is_file():
        return None, f"no lab fit at {path}"
    fit = json.loads(path.read_text(encoding="utf-8"))
    corpus = fit.get("corpus") or {}
    diff = [k for k in MATCH_KEYS if k in corpus and corpus[k] != getattr(data, k)]
    if fit.get("seq_len") not in (None, seq_len):
        diff.append("seq_len")
    if diff:
        return None, f"the lab fit at {path} was measured on other data ({', '.join(diff)} differ)"
    return fit, f"lab fit {path}"


def size_for_budget(budget_s: float, vocab_size: int, seq_len: int, flops_per_s: float, lab: dict | None) -> dict:
    """The rung nearest the compute-optimal N for `budget_s` seconds at `flops_per_s`."""
    c = flops_per_s * budget_s * (1 - EVAL_SHARE)
    if lab is not None:
        a2 = lab["approach2"]
        n_opt, rule = a2["k_n"] * c ** a2["a"], f"lab fit (Approach 2: N_opt = {a2['k_n']:.3g} C^{a2['a']:.3f})"
        a3 = lab["approach3"]
        law = Fit("lab", a3["E"], a3["A"], a3["B"], a3["alpha"], a3["beta"], "lab")
    else:
        n_opt, rule, law = optimum(c, "chinchilla")[0], "Chinchilla (Hoffmann et al. 2022, Approach 3 constants)", CHINCHILLA
    rungs = ladder(vocab_size, seq_len)
    best = min(rungs, key=lambda r: abs(math.log(r.params / n_opt)))
    tokens = c / best.flops_per_token
    return {"rule": rule, "flops_per_s": flops_per_s, "budget_s": budget_s, "compute": c, "n_opt": n_opt,
            "rung": best.k, "params": best.params, "planned_tokens": tokens, "model": best.model,
            "predicted_loss": law.loss(best.params, tokens), "prediction_is_target": lab is not None}


def sizing_lines(s: dict, val_loss: float, tokens: int) -> list[str]:
    """The report's paragraph: which rule sized the model and how far the run landed from it."""
    gap = val_loss - s["predicted_loss"]
    caveat = "" if s["prediction_is_target"] else (
        " (Chinchilla's loss is in nats per MassiveText token; on this corpus and tokenizer it is a reference, not a target)")
    return ["## How the model was sized",
            f"- rule: {s['rule']}",
            f"- measured {s['flops_per_s']:.3g} training FLOP/s x {s['budget_s']:.0f} s x {1 - EVAL_SHARE:.0%} = C = {s['compute']:.3g} FLOPs",
            f"- compute-optimal N = {s['n_opt']:,.0f}; nearest ladder model (rung {s['rung']}): {s['params']:,} params, "
            f"{s['planned_tokens']:,.0f} planned tokens (trained: {tokens:,})",
            f"- predicted loss {s['predicted_loss']:.3f}, reached {val_loss:.3f}: {gap:+.3f} nats{caveat}", ""]
