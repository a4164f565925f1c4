"""`llmcycle scale sweep`: an IsoFLOP sweep (Hoffmann et al. 2022, Approach 2) of ordinary run directories.

    DIR/sweep.json            settings, corpus identity, and the planned points
    DIR/data/                 the corpus, prepared ONCE (every point reads the same held-out tokens)
    DIR/points/C<budget>_k<rung>/   one run directory per (budget, model): config.json, data -> ../../data,
                              checkpoints, metrics (train with `llmcycle train --run` like any run)

For each compute budget C the sweep takes `sizes` models of the ladder (shapes.py) spread around the
planner's compute-optimal N (plan/scaling.py; the data-constrained rule of Muennighoff et al. 2023
where the corpus is short) and trains each for D = C / (training FLOPs per token) tokens
(`max_tokens`), so the cosine schedule (to 10 %) ends at that horizon. C counts every matmul FLOP
(6N + the attention scores, plan/compute.py), so small models are not flattered by C = 6ND.
A point is finished when its newest checkpoint reached its planned steps; a killed one continues
with --resume; finished points are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from llmcycle.config import DataConfig, RunConfig, TrainConfig
from llmcycle.plan.scaling import data_plan
from llmcycle.rundir import config_path, data_dir, latest_checkpoint, meta_path, read_state, save_config
from llmcycle.atomic import atomic_write_text
from llmcycle.scale.shapes import Rung, ladder, spread

SWEEP_FILE = "sweep.json"
MIN_STEPS = 50  # optimizer steps a point needs at least, for warmup + cosine to mean anything
MAX_EPOCHS = 4.0  # Muennighoff et al. 2023: up to ~4 epochs of repeated data is nearly as good as fresh
CORPUS_KEYS = ("source", "include", "exclude", "text_field", "tokenizer", "vocab_size", "val_fraction", "seed",
               "max_bytes", "mix")


@dataclass(frozen=True)
class Settings:
    """What every point of a sweep shares (saved in sweep.json)."""

    seq_len: int = 256
    batch_size: int = 8
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    eval_batches: int = 16
    threads: int | None = None
    seed: int = 1337
    law: str = "chinchilla"  # the planner's law that centres each budget's spread
    width: float = 16.0  # max/min parameter ratio of a budget's spread


@dataclass(frozen=True)
class Point:
    name: str
    budget: float
    rung: int
    params: int
    non_embedding: int
    flops_per_token: float
    tokens: int  # steps x tokens per step (<= C / flops_per_token)
    steps: int
    epochs: float  # tokens / unique train tokens


def points_dir(sweep: Path) -> Path:
    return Path(sweep) / "points"


def point_dir(sweep: Path, name: str) -> Path:
    return points_dir(sweep) / name


def point_name(budget: float, k: int) -> str:
    return f"C{budget:.3g}_k{k:02d}".replace("+", "")


def plan_points(budgets: list[float], sizes: int, vocab_size: int, unique_tokens: int, s: Settings) -> tuple[list[Point], list[str]]:
    """The sweep's points, and notes on what was adjusted. Raises ValueError when a budget is too
    small for the smallest model or the corpus too short for the budget even after the data rule."""
    if not budgets or any(c <= 0 for c in budgets):
        raise ValueError(f"--budgets must be positive FLOP counts, e.g. 1e12,3e12,1e13; got {budgets}")
    if len(set(budgets)) != len(budgets):
        raise ValueError(f"--budgets has duplicates: {budgets}")
    tps = s.batch_size * s.seq_len
    rungs, points, notes = ladder(vocab_size, s.seq_len), [], []
    for c in sorted(budgets):
        steps = {r.k: int(c / r.flops_per_token) // tps for r in rungs}
        fits = [r for r in rungs if steps[r.k] >= MIN_STEPS]
        if len(fits) < sizes:
            need = sorted(rungs, key=lambda r: r.flops_per_token)[sizes - 1]
            raise ValueError(
                f"budget {c:.3g} FLOPs is too small for {sizes} models of at least {MIN_STEPS} steps of {tps} tokens: "
                f"the smallest model (k={rungs[0].k}, {rungs[0].params:,} params) gets {steps[rungs[0].k]} steps. "
                f"Use budgets >= {MIN_STEPS * tps * need.flops_per_token:.2g}, fewer --sizes, or a smaller --batch-size/--seq-len")
        dp = data_plan(c, unique_tokens, s.law, MAX_EPOCHS)
        center = dp["params"]
        if dp["verdict"] == "data-bound":
            notes.append(f"budget {c:.3g}: the {s.law} optimum needs {dp['compute_optimal_tokens']:.3g} tokens = "
                         f"{dp['epochs_needed']:.1f} epochs of {unique_tokens:,} unique tokens; data-bound (Muennighoff et al. "
                         f"2023: > {MAX_EPOCHS:g} epochs lose value), so the spread centres on {center:,.0f} params "
                         f"(data-constrained optimum {dp['muennighoff_params']:,.0f})")
        ok = [r for r in fits if steps[r.k] * tps <= MAX_EPOCHS * unique_tokens]
        if len(ok) < sizes:
            raise ValueError(
                f"the corpus is too small for budget {c:.3g}: only {len(ok)} models stay within {MAX_EPOCHS:g} epochs of its "
                f"{unique_tokens:,} unique train tokens (Muennighoff et al. 2023), {sizes} needed. Use a larger corpus "
                f"(--max-bytes higher or another --corpus), smaller budgets, or fewer --sizes")
        if len(ok) < len(fits):
            notes.append(f"budget {c:.3g}: {len(fits) - len(ok)} smaller model(s) left out: they would repeat the data "
                         f"more than {MAX_EPOCHS:g} times")
        for r in spread(center, sizes, ok, s.width):
            n = steps[r.k]
            points.append(Point(point_name(c, r.k), c, r.k, r.params, r.non_embedding, r.flops_per_token, n * tps, n,
                                n * tps / unique_tokens))
    repeated = [p.name for p in points if p.epochs > 1]
    if repeated:
        notes.append(f"{len(repeated)} point(s) see the train data more than once (up to "
                     f"{max(p.epochs for p in points):.2f} epochs): {', '.join(repeated)}")
    return points, notes


def train_config(p: Point, s: Settings) -> TrainConfig:
    return TrainConfig(
        seq_len=s.seq_len, batch_size=s.batch_size, lr=s.lr, min_lr_ratio=s.min_lr_ratio,
        warmup_steps=max(1, min(50, p.steps // 10)), max_tokens=p.tokens, eval_every=max(1, p.steps // 4),
        eval_batches=s.eval_batches, ckpt_every=max(25, p.steps // 4), keep_checkpoints=1, seed=s.seed,
        threads=s.threads)


def point_config(p: Point, s: Settings, data: DataConfig, rungs: dict[int, Rung]) -> RunConfig:
    return RunConfig(model=rungs[p.rung].model, data=data, train=train_config(p, s))


def point_status(run: Path, p: Point) -> str:
    """'done', 'partial' (checkpoints short of the planned steps) or 'new'."""
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        return "new"
    return "done" if read_state(ckpt)["step"] >= p.steps else "partial"


def point_result(run: Path) -> dict | None:
    """The final evaluation of a finished point (None if it has no checkpoint)."""
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        return None
    st = read_state(ckpt)
    return {"step": st["step"], "tokens": st["tokens"], "val_loss": st.get("val", {}).get("val_loss"),
            "val_bpb": st.get("val", {}).get("val_bpb"), "elapsed": st.get("elapsed")}


# ------------------------------------------------------------------ the sweep directory


def corpus_identity(data: DataConfig, meta: dict) -> dict:
    """What makes two sweeps comparable: the corpus settings, the tokenizer, and the token shards' hashes."""
    return {"data": {k: getattr(data, k) for k in CORPUS_KEYS}, "vocab_size": meta["vocab_size"],
            "tokenizer_kind": meta["tokenizer"]["kind"],
            "shards": {split: [sh["sha256"] for sh in meta["splits"][split]["shards"]] for split in ("train", "val")}}


def load_sweep(sweep: Path) -> dict:
    path = Path(sweep) / SWEEP_FILE
    if not path.is_file():
        raise ValueError(f"{sweep} is not a sweep directory (no {SWEEP_FILE}); make one with `llmcycle scale sweep --out {sweep}`")
    return json.loads(path.read_text(encoding="utf-8"))


def _check_same(old: dict, data: DataConfig, settings: Settings, sweep: Path) -> None:
    new = {k: getattr(data, k) for k in CORPUS_KEYS}
    diff = {k: (old["corpus"]["data"][k], new[k]) for k in CORPUS_KEYS if old["corpus"]["data"].get(k) != new[k]}
    if diff:
        said = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        raise ValueError(f"{sweep} was prepared from another corpus or tokenizer ({said}); its points are not comparable "
                         "with new ones. Use another --out, or the same corpus options")
    was = Settings(**old["settings"])
    keep = ("seq_len", "batch_size", "lr", "min_lr_ratio", "eval_batches", "seed")
    changed = [k for k in keep if getattr(was, k) != getattr(settings, k)]
    if changed:
        raise ValueError(f"{sweep} was swept with other training settings ({', '.join(f'{k}={getattr(was, k)}' for k in changed)}); "
                         "points must share them to be compared. Use another --out or the same settings")


def prepare_sweep(sweep: Path, data: DataConfig, settings: Settings, progress: bool = True) -> dict:
    """Prepare DIR/data once (or check an existing sweep used the same corpus); returns the data meta."""
    from llmcycle.data.prepare import prepare
    from llmcycle.data.shards import load_meta

    sweep = Path(sweep)
    if (sweep / SWEEP_FILE).is_file():
        old = load_sweep(sweep)
        _check_same(old, data, settings, sweep)
        meta = load_meta(data_dir(sweep))
        if corpus_identity(data, meta)["shards"] != old["corpus"]["shards"]:
            raise ValueError(f"{data_dir(sweep)} no longer holds the tokens {sweep} was swept on (shard hashes differ); "
                             "start a new sweep directory")
        return meta
    if sweep.exists() and any(sweep.iterdir()) and not meta_path(data_dir(sweep)).is_file():
        raise ValueError(f"{sweep} exists and is not a sweep directory; choose another --out")
    return prepare(data, data_dir(sweep), progress=progress)


def write_sweep(sweep: Path, data: DataConfig, meta: dict, settings: Settings, points: list[Point], notes: list[str]) -> None:
    doc = {"settings": asdict(settings), "corpus": corpus_identity(data, meta),
           "unique_train_tokens": meta["splits"]["train"]["tokens"], "val_tokens": meta["splits"]["val"]["tokens"],
           "bytes_per_token": meta["splits"]["val"]["text_bytes"] / meta["splits"]["val"]["tokens"],
           "points": [asdict(p) for p in points], "notes": notes}
    path = Path(sweep) / SWEEP_FILE
    if path.is_file():  # points from earlier invocations (other budgets) stay part of the sweep
        old = {p["name"]: p for p in load_sweep(sweep)["points"]}
        old.update({p["name"]: p for p in doc["points"]})
        doc["points"] = sorted(old.values(), key=lambda p: (p["budget"], p["params"]))
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def materialise(sweep: Path, p: Point, cfg: RunConfig) -> Path:
    """The point's run directory: config.json and a relative link to the shared data."""
    run = point_dir(sweep, p.name)
    run.mkdir(parents=True, exist_ok=True)
    link = data_dir(run)
    if not link.exists():
        os.symlink(os.path.relpath(data_dir(sweep), run), link, target_is_directory=True)
    if not config_path(run).is_file() or latest_checkpoint(run) is None:
        save_config(run, cfg)
    return run


def commands(sweep: Path, points: list[Point], nproc: int = 8) -> list[str]:
    """Each point as a shell command (the run directories are already made): one machine per point,
    or torchrun for a point spread over `nproc` processes."""
    out = []
    for p in points:
        run = point_dir(sweep, p.name)
        out.append(f"llmcycle train --run {run} --quiet    # {p.params:,} params, {p.tokens:,} tokens, C={p.budget:.3g}")
        out.append(f"torchrun --standalone --nproc-per-node {nproc} -m llmcycle train --run {run} --strategy ddp --quiet")
    return out


def run_sweep(sweep: Path, points: list[Point], settings: Settings, data: DataConfig, vocab_size: int,
              resume: bool = False, progress: bool = True, log=print) -> list[dict]:
    """Train every point not yet finished, smallest budget first. Returns one row per point."""
    from llmcycle.train.loop import train

    rungs = {r.k: r for r in ladder(vocab_size, settings.seq_len)}
    status = {p.name: point_status(point_dir(sweep, p.name), p) for p in points}
    partial = [n for n, st in status.items() if st == "partial"]
    if partial and not resume:
        raise ValueError(f"point(s) {', '.join(partial)} were interrupted; pass --resume to continue them "
                         f"(or delete {points_dir(sweep)}/<point> to start one over)")
    rows = []
    for i, p in enumerate(points, 1):
        run = point_dir(sweep, p.name)
        if status[p.name] == "done":
            log(f"[{i}/{len(points)}] {p.name}: finished, skipped")
        else:
            cfg = point_config(p, settings, data, rungs)
            if status[p.name] == "new" and run.exists():  # killed before its first checkpoint: start it over
                shutil.rmtree(run)
            materialise(sweep, p, cfg)
            log(f"[{i}/{len(points)}] {p.name}: {p.params:,} params, {p.tokens:,} tokens ({p.steps} steps)"
                + (" (resumed)" if status[p.name] == "partial" else ""))
            train(run, cfg, resume=status[p.name] == "partial", progress=progress)
        rows.append({**asdict(p), **(point_result(run) or {})})
    return rows
