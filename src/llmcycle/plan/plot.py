"""PNG of the training-memory breakdown per GPU across strategies (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from llmcycle.plan.hardware import GIB

PARTS = ("weights", "grads", "optimizer", "activations")


def plot_memory(plan: dict, path: str | Path) -> Path:
    """Stacked bars (GiB per GPU) of weights, gradients, optimizer states and activations for each
    strategy, with the chosen GPU's usable memory as a dashed line."""
    import matplotlib  # optional heavy dependency, only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = plan["training"]
    names = list(tr["per_device"])
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    bottom = [0.0] * len(names)
    for part in PARTS:
        vals = [tr["per_device"][n][f"{part}_bytes"] / GIB for n in names]
        ax.bar(names, vals, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.axhline(tr["capacity_bytes"] / GIB, color="k", ls="--", lw=1, label=f"{tr['gpu']} usable")
    s = tr["settings"]
    ax.set_ylabel("GiB per GPU (2^30 bytes)")
    ax.set_title(f"{plan['model']['name']}: {s['gpus']} GPUs (dp {s['dp']}, tp {s['tp']}, pp {s['pp']}), "
                 f"{s['dtype']}, {s['optimizer']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
