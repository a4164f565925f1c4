"""report.md for a run directory: configuration, accounting, compute, loss curve, samples.

Every figure comes from the run itself: parameters and FLOPs per token from the model's own
accounting, tokens from the loop state, losses from metrics.jsonl.
"""

from __future__ import annotations

from pathlib import Path

from llmcycle import rundir
from llmcycle.atomic import atomic_write_text
from llmcycle.config import RunConfig
from llmcycle.lifecycle import families
from llmcycle.models.accounting import param_groups
from llmcycle.plan.compute import PF_DAY


def read_metrics(run: Path) -> tuple[list[dict], list[dict]]:
    """(training rows, evaluation rows) from metrics.jsonl."""
    rows = rundir.read_metrics(run)
    return [r for r in rows if "loss" in r], [r for r in rows if "val_loss" in r]


def plot_loss(run: Path, out: Path) -> None:
    import matplotlib  # only when a plot is drawn: a slow import the report's readers do not need

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_rows, val_rows = read_metrics(run)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([r["tokens"] for r in train_rows], [r["loss"] for r in train_rows], label="train", lw=1)
    ax.plot([r["tokens"] for r in val_rows], [r["val_loss"] for r in val_rows], "o-", label="validation")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"{Path(run).name}: loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _md_block(text: str) -> str:
    return "```python\n" + text.replace("```", "`\u200b``") + "\n```"


def write_report(run: Path, cfg: RunConfig, meta: dict, state: dict, samples: list[dict], model) -> dict:
    run = Path(run)
    params = param_groups(model)
    non_emb = params["total"] - params["embedding"] - params["position"]
    flops = state.flops_per_token * state.tokens
    val = state.val
    plot_loss(run, rundir.loss_plot_path(run))
    summary = {
        "params": params["total"], "non_embedding_params": non_emb, "tokens": state.tokens,
        "tokens_per_param": state.tokens / params["total"], "flops": flops, "pf_days": flops / PF_DAY,
        "flops_per_token": state.flops_per_token, "steps": state.step, "train_seconds": state.elapsed,
        "val_loss": val["val_loss"], "val_bpb": val["val_bpb"] if cfg.model.family == "decoder" else None,
    }
    m, t = cfg.model, cfg.train
    lines = [
        f"# llmcycle run: {run.name}", "",
        "## Configuration",
        f"- model: {m.family}, {families.layers_text(m)}, width {m.d_model}, {m.n_head} heads "
        f"({m.kv_heads} key/value), MLP {m.mlp} {m.ffn}, {m.norm}, {m.pos_emb} positions, context {m.max_seq_len}, "
        f"vocab {m.vocab_size}, tied embeddings: {m.tie_embeddings}",
        f"- data: {cfg.data.source} ({meta['splits']['train']['tokens']:,} train / {meta['splits']['val']['tokens']:,} validation tokens, "
        f"{cfg.data.tokenizer} tokenizer)",
        f"- training: batch {t.batch_size} x {t.seq_len} tokens, AdamW lr {t.lr:g} (warmup {t.warmup_steps}, cosine to "
        f"{t.lr * t.min_lr_ratio:g}), weight decay {t.weight_decay}, clip {t.grad_clip}, dtype {t.dtype}",
        families.objective_line(cfg),
        "- full config: `config.json`", "",
        "## Accounting (measured from the model)",
        "| group | parameters |", "|---|---:|",
        *[f"| {g} | {n:,} |" for g, n in params.items() if g != "total" and n],
        f"| **total** | **{params['total']:,}** |", "",
        *[line for line in (families.stack_line(model),) if line],
        f"- tokens seen: {state.tokens:,} in {state.step} steps ({state.elapsed:.0f} s of training): "
        f"{summary['tokens_per_param']:.2f} tokens per parameter (Chinchilla's compute-optimal ratio is ~20)",
        f"- compute: {state.flops_per_token:,} FLOPs per training token x {state.tokens:,} tokens = "
        f"{flops:.3e} FLOPs = {summary['pf_days']:.2e} petaflop/s-days",
        families.compute_comparison(cfg), "",
        "## Evaluation",
        families.evaluation_line(m.family, val), "",
        f"![loss curve]({rundir.LOSS_PLOT})", "",
        "## Samples", families.SAMPLE_INTRO[m.family], "",
    ]
    for s in samples:
        lines += [f"### {s['setting']} ({s['finish']})", _md_block(s.get("shown", s["prompt"] + s["completion"])), ""]
    atomic_write_text(rundir.report_path(run), "\n".join(lines))
    samples_md = ["# Samples", ""] + [f"## {s['setting']}\n{_md_block(s.get('shown', s['prompt'] + s['completion']))}\n"
                                      for s in samples]
    atomic_write_text(rundir.samples_path(run), "\n".join(samples_md))
    return summary
