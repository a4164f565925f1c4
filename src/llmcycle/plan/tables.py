"""Render a plan dict (build.build_plan) as plain-text tables, every figure with its unit.

Memory is printed as GB (1e9 bytes) and GiB (2^30 bytes); compute as FLOPs, PF-days
(8.64e19 FLOPs), GPU-hours and days.
"""

from __future__ import annotations

from llmcycle.plan.hardware import GB, GIB, GPUS


def gb(b: float | None) -> str:
    return "-" if b is None else f"{b / GB:,.2f} GB ({b / GIB:,.2f} GiB)"


def num(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:,.2f}{suffix}{unit}"
    return f"{x:,.3g}{unit}"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def model_text(m: dict) -> str:
    p = m["params"]
    how = "exact, counted on the meta device" if m["params_exact"] else "analytic formula"
    out = [f"Model: {m['name']} ({m['family']}, from {m['source']}); parameters {how}"]
    if m["shape"]:
        s = m["shape"]
        dec = f"+{s['n_decoder_layer'] or s['n_layer']}" if s["family"] == "seq2seq" else ""
        out.append(f"  layers {s['n_layer']}{dec}, d_model {s['d_model']}, heads {s['n_head']}, "
                   f"kv heads {s['n_kv_head'] or s['n_head']}, ffn {s['d_ff'] or 4 * s['d_model']} ({s['mlp']}), "
                   f"vocab {s['vocab_size']}, context {s['max_seq_len']}, {'tied' if s['tied'] else 'untied'} head")
    rows = [[g, f"{v:,.0f}", f"{100 * v / p['total']:.1f}%"] for g, v in p.items() if g != "total" and v]
    rows.append(["total", f"{p['total']:,.0f} ({num(p['total'])})", "100%"])
    return "\n".join(out) + "\n" + table(["group", "parameters", "share"], rows)


def inference_text(inf: dict) -> str:
    ctx = f"context {inf['seq']} tokens" if inf["seq"] else "no KV cache without a shape"
    head = (f"Inference memory per GPU (batch {inf['batch']}, {ctx}, tensor parallel {inf['tp']}; "
            f"overhead = {inf['overhead_fraction']:.0%} of weights, EleutherAI; KV cache {inf['kv_dtype']}); "
            f"fits = total <= {gb(inf['capacity_bytes'])} usable on {inf['gpu']}")
    rows = [[dt, gb(r["weights_bytes"]), gb(r["kv_cache_bytes"]), gb(r["overhead_bytes"]), gb(r["total_bytes"]),
             "yes" if r["fits"] else "no"] for dt, r in inf["per_dtype"].items()]
    return head + "\n" + table(["weights dtype", "weights", "KV cache", "overhead", "total", "fits"], rows)


def training_text(tr: dict) -> str:
    s = tr["settings"]
    mixed = " mixed precision (fp32 master)" if s["dtype"] != "fp32" else ""
    attn = "flash attention (no s x s scores stored)" if s["flash"] else "scores stored"
    head = (f"Training memory per GPU: {s['gpus']} GPUs = dp {s['dp']} x tp {s['tp']} x pp {s['pp']}, {s['dtype']}{mixed}, "
            f"{s['grad_dtype']} gradients, {s['optimizer']}, micro-batch {s['batch']} x {s['seq']} tokens, recompute {s['recompute']}, {attn}"
            f"{', sequence parallel' if s['sp'] else ''}")
    if not s["activations_known"]:
        head += "\n  (activations unknown: no model shape; give --preset/--hf-config/dims for them)"
    parts = ("weights", "grads", "optimizer", "activations", "total")
    rows = [[k + (" *" if k == s["highlighted_strategy"] else "")] + [gb(r[f"{p}_bytes"]) for p in parts]
            + ["yes" if r["fits"] else "no"] for k, r in tr["per_device"].items()]
    t1 = table(["strategy", *parts, f"fits {tr['gpu']}"], rows)
    names = list(GPUS)
    rows2 = [[k] + ["-" if v[n] is None else str(v[n]) for n in names] for k, v in tr["min_gpus"].items()]
    t2 = table(["fewest GPUs"] + names, rows2)
    note = "zero1/2/3 = ZeRO stages (zero2 = FSDP SHARD_GRAD_OP, zero3 = FSDP FULL_SHARD); '-' = no count fits"
    title = "Smallest GPU count that fits, per strategy (same tp x pp, usable = datasheet GiB - reserve)"
    text = f"{head}\n{t1}\n\n{title}\n{t2}\n{note}"
    ft = tr.get("fine_tuning")
    if ft:
        cols = ("weights", "trainable states", "activations", "total")
        keys = ("weights_bytes", "trainable_states_bytes", "activations_bytes", "total_bytes")
        rows3 = [[name, f"{r['trainable_params']:,.0f}"] + [gb(r[k]) for k in keys] + ["yes" if r["fits"] else "no"]
                 for name, r in ft["rows"].items()]
        text += (f"\n\nFine-tuning on one {ft['gpu']} (same dtype, micro-batch and sequence; LoRA adapts "
                 f"{', '.join(ft['targets'])}; adapters fp32 with AdamW)\n"
                 + table(["method", "trainable params", *cols, f"fits {ft['gpu']}"], rows3))
    return text


def compute_text(c: dict | None) -> str:
    if not c:
        return ""
    fa = c["flops_with_attention"]
    cost = "-" if c["cost"] is None else f"{c['cost']:,.0f} (at {c['price_per_gpu_hour']}/GPU-h)"
    rows = [["tokens", num(c["tokens"]) + " tokens"], ["tokens per parameter", f"{c['tokens_per_param']:.1f}"],
            ["training compute 6ND", f"{c['flops_6nd']:.3e} FLOPs"],
            ["with attention (per-token count)", "-" if fa is None else f"{fa:.3e} FLOPs"],
            ["petaflop/s-days", f"{c['pf_days']:,.2f} PF-days"],
            [f"GPU-hours at MFU {c['mfu']:.0%} ({c['gpu']})", f"{c['gpu_hours']:,.0f} GPU-h"],
            [f"wall time on {c['gpus']} GPUs", f"{c['wall_hours']:,.1f} h = {c['wall_days']:,.2f} days"], ["cost", cost]]
    return "Compute\n" + table(["quantity", "value"], rows)


def _laws_text(sc: dict) -> list[str]:
    rows = [[law, num(r["params"]) + " params", num(r["tokens"]) + " tokens", f"{r['tokens_per_param']:.1f}",
             f"{r['loss']:.3f} nats"] for law, r in sc["laws"].items()]
    return [f"  budget {sc['budget_flops']:.3e} FLOPs = {sc['budget_pf_days']:,.1f} PF-days; compute-optimal split (C = 6ND):",
            table(["law", "params", "tokens", "tokens/param", "predicted loss"], rows), "  " + sc["loss_note"]]


def _data_text(d: dict) -> str:
    return (f"  data: {num(d['unique_tokens'])} unique tokens; {d['law']} wants {num(d['compute_optimal_tokens'])} tokens "
            f"= {d['epochs_needed']:.1f} epochs -> {d['verdict']}: train {num(d['params'])} params on "
            f"{num(d['tokens'])} tokens ({d['epochs']:.1f} epochs, {d['flops_used']:.3e} FLOPs).\n"
            f"  Muennighoff et al. 2023: up to ~{d['max_epochs']:g} epochs is nearly as good as fresh data; their "
            f"data-constrained optimum is {num(d['muennighoff_params'])} params, {d['muennighoff_epochs']:.1f} epochs")


def _inference_aware_text(r: dict) -> str:
    rows = [[name, num(r[p + "params"]), num(r[p + "train_tokens"]), f"{r[p + 'tokens_per_param']:.1f}",
             f"{r[p + 'train_flops']:.3e}", f"{r[p + 'total_flops']:.3e}"]
            for name, p in (("chinchilla-optimal", "chinchilla_"), ("inference-aware", ""))]
    return "\n".join([
        f"  inference-aware optimum (Sardana et al. 2023, fit {r['fit']}): loss {r['target_loss']:.4f} nats "
        f"({r['basis']}), {num(r['inference_tokens'])} lifetime inference tokens at 2N FLOPs each:",
        table(["model", "params", "train tokens", "tokens/param", "train FLOPs", "lifetime FLOPs"], rows),
        f"  -> {r['params_ratio']:.2f}x the params on {r['tokens_ratio']:.2f}x the tokens: {r['flops_saved']:.1%} fewer "
        f"lifetime FLOPs ({r['flops_saved_abs']:.2e}) than the Chinchilla-optimal model of the same loss"]
        + ([f"  this model ({num(r['given_params'])} params on {num(r['given_tokens'])} tokens) would spend "
            f"{r['given_total_flops']:.3e} lifetime FLOPs; the inference-aware optimum spends {r['given_flops_saved']:.1%} fewer"]
           if r["basis"] == "this model on --tokens" else []))


def scaling_text(sc: dict | None) -> str:
    if not sc:
        return ""
    out = ["Scaling laws"] + (_laws_text(sc) if sc["laws"] else [])
    if sc.get("this_model"):
        t = sc["this_model"]
        out.append(f"  this model: {num(t['params'])} params on {num(t['tokens'])} tokens = {t['tokens_per_param']:.1f} "
                   f"tokens/param (Chinchilla ~20: {num(t['chinchilla_tokens'])} tokens); predicted loss "
                   f"{t['loss_chinchilla']:.3f} (Chinchilla fit), {t['loss_epoch']:.3f} (Epoch AI fit) nats")
    if sc.get("data"):
        out.append(_data_text(sc["data"]))
    if sc.get("inference_aware"):
        out.append(_inference_aware_text(sc["inference_aware"]))
    return "\n".join(out)


def render(plan: dict) -> str:
    parts = [model_text(plan["model"]), inference_text(plan["inference"]), training_text(plan["training"]),
             compute_text(plan["compute"]), scaling_text(plan["scaling"])]
    return "\n\n".join(p for p in parts if p) + "\n"
