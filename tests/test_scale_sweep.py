"""The IsoFLOP sweep end to end on a tiny corpus: plan, train, skip, resume, refuse, then fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmcycle.config import DataConfig
from llmcycle.rundir import config_path, data_dir, latest_checkpoint
from llmcycle.scale import sweep as sw
from llmcycle.scale.report import fit_sweep
from llmcycle.scale.shapes import ladder, spread

DATA = DataConfig(tokenizer="byte", max_bytes=150_000)
SETTINGS = sw.Settings(seq_len=32, batch_size=4, lr=3e-3, eval_batches=2, threads=1)
BUDGETS = [6e9, 1.2e10]


def test_ladder_grows_and_spread_is_centred():
    rungs = ladder(300, 64)
    sizes = [r.params for r in rungs]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert rungs[2].model.d_model == 64 and rungs[2].model.n_layer == 2  # rung 4: d = 16 k, L = ceil(k / 2)
    picked = spread(1e6, 5, rungs, width=16)
    assert len({r.k for r in picked}) == 5
    assert picked[0].params < 1e6 < picked[-1].params


def test_budget_too_small_and_corpus_too_small_are_said():
    with pytest.raises(ValueError, match=r"too small for 3 models.*Use budgets >="):
        sw.plan_points([1e7], 3, 260, 10**7, SETTINGS)
    with pytest.raises(ValueError, match=r"corpus is too small.*Muennighoff"):
        sw.plan_points([1e12], 3, 260, 1_000, SETTINGS)
    points, notes = sw.plan_points([6e9], 3, 260, 10_000, SETTINGS)
    assert any("data-bound" in n for n in notes)  # the planner's data-constrained rule centred the spread
    assert all(p.epochs <= sw.MAX_EPOCHS for p in points)


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("sweep")
    meta = sw.prepare_sweep(out, DATA, SETTINGS, progress=False)
    points, notes = sw.plan_points(BUDGETS, 3, meta["vocab_size"], meta["splits"]["train"]["tokens"], SETTINGS)
    sw.write_sweep(out, DATA, meta, SETTINGS, points, notes)
    # one point trained half-way first, as if the sweep had been killed during it
    rungs = {r.k: r for r in ladder(meta["vocab_size"], SETTINGS.seq_len)}
    first = points[0]
    half = sw.point_config(first, SETTINGS, DATA, rungs)
    half.train.max_tokens = first.tokens // 2
    run = sw.materialise(out, first, half)
    from llmcycle.train.loop import train

    train(run, half, progress=False)
    return out, points, meta


def test_sweep_runs_resumes_and_skips(swept):
    out, points, meta = swept
    assert len(points) == 6 and len({p.budget for p in points}) == 2
    assert sw.point_status(sw.point_dir(out, points[0].name), points[0]) == "partial"
    with pytest.raises(ValueError, match="--resume"):
        sw.run_sweep(out, points, SETTINGS, DATA, meta["vocab_size"], progress=False)
    log = []
    rows = sw.run_sweep(out, points, SETTINGS, DATA, meta["vocab_size"], resume=True, progress=False, log=log.append)
    assert "(resumed)" in log[0]
    assert all(r["step"] == p.steps and r["val_loss"] > 0 for r, p in zip(rows, points))
    run = sw.point_dir(out, points[1].name)
    assert data_dir(run).resolve() == data_dir(out).resolve()  # every point reads the same prepared tokens
    assert config_path(run).is_file()  # an ordinary run directory
    ckpt = latest_checkpoint(run)
    log = []
    sw.run_sweep(out, points, SETTINGS, DATA, meta["vocab_size"], progress=False, log=log.append)
    assert all("skipped" in line for line in log)
    assert latest_checkpoint(run) == ckpt


@pytest.fixture(scope="module")
def fitted(swept, tmp_path_factory) -> tuple[dict, Path]:
    fit_dir = tmp_path_factory.mktemp("fit")
    return fit_sweep(swept[0], fit_dir, bootstrap=10, refine=2), fit_dir


def test_fit_accepts_a_finished_sweep_and_refuses_missing_points(swept, fitted, tmp_path):
    out, points, _ = swept
    res, fit_dir = fitted
    assert res["n_points"] == 6 and res["params"] == "total"
    assert {"a", "b", "minima"} <= set(res["approach2"])
    for f in ("fit.json", "fit.md", "isoflop.png", "frontier.png", "residuals.png"):
        assert (fit_dir / f).stat().st_size > 0
    assert json.loads((fit_dir / "fit.json").read_text())["approach3"]["alpha"] == res["approach3"]["alpha"]
    # a point whose run was lost: its budget now has 2 sizes, and the fit says 3 are needed
    saved = (out / sw.SWEEP_FILE).read_text()
    doc = json.loads(saved)
    doc["points"].append({**doc["points"][0], "name": "C1.2e10_k99", "budget": 1.2e10})
    doc["points"] = [p for p in doc["points"] if p["name"] != points[-1].name]
    (out / sw.SWEEP_FILE).write_text(json.dumps(doc))
    try:
        with pytest.raises(ValueError, match="at least 3 model sizes per budget"):
            fit_sweep(out, tmp_path / "fit2", bootstrap=10, refine=2)
    finally:
        (out / sw.SWEEP_FILE).write_text(saved)


def test_run_sizing_uses_a_matching_lab_fit_else_chinchilla(swept, fitted):
    from llmcycle.scale.sizing import load_lab_fit, size_for_budget

    _, _, meta = swept
    fit_dir = fitted[1]
    lab, why = load_lab_fit(fit_dir, DATA, SETTINGS.seq_len)
    assert lab is not None and "lab fit" in why
    s = size_for_budget(60, meta["vocab_size"], SETTINGS.seq_len, 1e9, lab)
    assert s["rule"].startswith("lab fit") and s["prediction_is_target"]
    assert s["compute"] == pytest.approx(1e9 * 60 * 0.9)
    other, why = load_lab_fit(fit_dir, DataConfig(tokenizer="bpe", max_bytes=150_000), SETTINGS.seq_len)
    assert other is None and "tokenizer" in why
    small = size_for_budget(10, 4096, 256, 1e10, None)
    big = size_for_budget(1000, 4096, 256, 1e10, None)
    assert small["rule"].startswith("Chinchilla") and small["params"] < big["params"]
    assert big["model"].d_model == 16 * big["rung"]


def test_another_corpus_or_tokenizer_is_refused(swept):
    out, _, _ = swept
    with pytest.raises(ValueError, match="another corpus or tokenizer"):
        sw.prepare_sweep(out, DataConfig(tokenizer="bpe", vocab_size=512, max_bytes=150_000), SETTINGS, progress=False)
    with pytest.raises(ValueError, match="another corpus or tokenizer"):
        sw.prepare_sweep(out, DataConfig(tokenizer="byte", max_bytes=100_000), SETTINGS, progress=False)
    with pytest.raises(ValueError, match="other training settings"):
        sw.prepare_sweep(out, DATA, sw.Settings(seq_len=64, batch_size=4, eval_batches=2), progress=False)


def test_print_commands(swept, capsys):
    out, points, _ = swept
    lines = sw.commands(out, points[:1], nproc=4)
    assert lines[0].startswith(f"llmcycle train --run {sw.point_dir(out, points[0].name)}")
    assert "torchrun --standalone --nproc-per-node 4 -m llmcycle train" in lines[1]
