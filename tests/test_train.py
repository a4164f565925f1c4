"""Training: loss falls, resume is bit-exact, checkpoints are atomic, divergence stops cleanly."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from llmcycle.config import RunConfig
from llmcycle.rundir import config_path, latest_checkpoint, list_checkpoints, load_model
from llmcycle import checkpoint as ckpt_mod
from llmcycle.train.loop import NonFiniteLoss, train
from llmcycle.train.optim import lr_at


def _copy_run(src, dst, **train_kw):
    shutil.copytree(src / "data", dst / "data")
    cfg = RunConfig.load(config_path(src))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train_kw))
    cfg.save(config_path(dst))
    return cfg


def test_loss_falls(prepared_run, tmp_path):
    cfg = _copy_run(prepared_run, tmp_path, max_steps=40, eval_every=40)
    state = train(tmp_path, cfg, progress=False)
    evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 40
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.5  # from ~ln(vocab) = 5.7 down a lot
    assert state.tokens == 40 * 8 * 32


def _weights(run):
    return load_file(str(latest_checkpoint(run) / "model.safetensors"))


def test_interrupted_and_resumed_run_matches_uninterrupted_bit_for_bit(prepared_run, tmp_path, monkeypatch):
    from llmcycle.train import loop

    a, b = tmp_path / "a", tmp_path / "b"
    cfg = _copy_run(prepared_run, a, max_steps=10, ckpt_every=4)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dropout=0.1))  # RNG must be restored too
    cfg.save(config_path(a))
    train(a, cfg, progress=False)
    _copy_run(prepared_run, b)
    cfg.save(config_path(b))
    real_step = loop._train_step

    def killed_at_7(wrapped, optimizer, data, step, *args):
        if step == 7:
            raise KeyboardInterrupt  # the process dies mid-run, after the step-4 checkpoint
        return real_step(wrapped, optimizer, data, step, *args)

    monkeypatch.setattr(loop, "_train_step", killed_at_7)
    with pytest.raises(KeyboardInterrupt):
        train(b, cfg, progress=False)
    monkeypatch.undo()
    assert latest_checkpoint(b).name == "step_000004"
    train(b, cfg, resume=True, progress=False)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_failed_checkpoint_write_leaves_previous_loadable(prepared_run, tmp_path, monkeypatch):
    cfg = _copy_run(prepared_run, tmp_path, max_steps=5, ckpt_every=5)
    train(tmp_path, cfg, progress=False)
    good = latest_checkpoint(tmp_path)
    def dying_write(path, text):  # weights and optimizer written, then the process "dies" writing the RNG state
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod, "atomic_write_text", dying_write)
    cfg10 = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=10))
    with pytest.raises(OSError, match="disk full"):
        train(tmp_path, cfg10, resume=True, progress=False)
    monkeypatch.undo()
    assert list_checkpoints(tmp_path) == [good]
    assert not list((tmp_path / "checkpoints").glob(".*tmp"))
    model, _ = load_model(tmp_path)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_leftover_partial_checkpoint_is_ignored_and_cleaned(prepared_run, tmp_path):
    cfg = _copy_run(prepared_run, tmp_path, max_steps=5, ckpt_every=5)
    train(tmp_path, cfg, progress=False)
    partial = tmp_path / "checkpoints" / ".step_000009.tmp"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    assert latest_checkpoint(tmp_path).name == "step_000005"
    cfg8 = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=8))
    train(tmp_path, cfg8, resume=True, progress=False)
    assert not partial.exists() and latest_checkpoint(tmp_path).name == "step_000008"


def test_non_finite_loss_stops_with_clear_message_and_keeps_checkpoint(prepared_run, tmp_path):
    cfg = _copy_run(prepared_run, tmp_path, max_steps=4, ckpt_every=4)
    train(tmp_path, cfg, progress=False)
    before = _weights(tmp_path)
    bad = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=30, lr=1e30, warmup_steps=0,
                                                              grad_clip=0.0))
    with pytest.raises(NonFiniteLoss, match="step_000004"):
        train(tmp_path, bad, resume=True, progress=False)
    after = _weights(tmp_path)
    assert latest_checkpoint(tmp_path).name == "step_000004"
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_without_checkpoint_is_a_clear_error(prepared_run, tmp_path):
    cfg = _copy_run(prepared_run, tmp_path)
    with pytest.raises(ValueError, match="no complete checkpoint"):
        train(tmp_path, cfg, resume=True, progress=False)


def test_schedule_warms_up_then_decays_to_min():
    cfg = RunConfig().train
    cfg = dataclasses.replace(cfg, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(100, 100, cfg) == pytest.approx(0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_time_budget_becomes_fixed_step_count(prepared_run, tmp_path):
    cfg = _copy_run(prepared_run, tmp_path, max_steps=None, max_time=3.0, eval_every=1000)
    state = train(tmp_path, cfg, progress=False)
    assert state.total_steps == state.step > 6  # fixed after timing, then honoured exactly
    assert state.stopped_by == "max_time"
    # the conversion itself: 10 s left at 0.1 s/step plus an 0.5 s evaluation every 1000 steps
    from llmcycle.train.state import TIMING_STEPS, Budget, LoopState

    state = LoopState(step=6, elapsed=1.0, tokens_per_step=256)
    budget = Budget(dataclasses.replace(cfg.train, max_time=11.0), state, resumed=False)
    budget.eval_time = 0.5
    assert not any(budget.after_step(0.1) for _ in range(TIMING_STEPS))  # still timing
    assert budget.after_step(0.1) and state.total_steps == 6 + int(10.0 / (0.1 + 0.5 / 1000))


def test_weight_decay_groups():
    from llmcycle.config import TrainConfig
    from llmcycle.models import build_model
    from llmcycle.train.optim import build_optimizer
    from conftest import tiny_model

    model = build_model(tiny_model(bias=True, norm="layernorm"))
    opt = build_optimizer(model, TrainConfig(max_steps=1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] > 0 and no_decay["weight_decay"] == 0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])


def test_step_budget_binds_from_the_first_step_even_with_a_time_budget(prepared_run, tmp_path):
    cfg = _copy_run(prepared_run, tmp_path, max_steps=2, max_time=600.0)
    state = train(tmp_path, cfg, progress=False)
    assert state.step == 2 == state.total_steps and state.stopped_by == "max_steps"
