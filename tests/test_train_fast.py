"""Training-speed options of `llmcycle train`: --compile gives the eager run's losses; --recompute
trains the same model through the loop."""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest

from llmcycle.config import RunConfig
from llmcycle.rundir import config_path, data_dir, read_metrics
from llmcycle.train.loop import train


def _run(prepared_run, dst, model=None, **train_kw):
    shutil.copytree(data_dir(prepared_run), data_dir(dst))
    cfg = RunConfig.load(config_path(prepared_run))
    cfg = RunConfig(model=dataclasses.replace(cfg.model, **(model or {})), data=cfg.data,
                    train=dataclasses.replace(cfg.train, max_steps=4, eval_every=4, log_every=1, **train_kw))
    train(dst, cfg, progress=False)
    return [r["loss"] for r in read_metrics(dst) if "loss" in r]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LLMCYCLE_TEST_COMPILE"),
                    reason="compiling takes minutes on a busy 2-core machine; opt in with LLMCYCLE_TEST_COMPILE=1")
def test_compiled_training_matches_eager(prepared_run, tmp_path):
    pytest.importorskip("torch._inductor")
    eager = _run(prepared_run, tmp_path / "eager")
    compiled = _run(prepared_run, tmp_path / "compiled", compile=True)
    assert len(compiled) == len(eager) == 4
    assert compiled == pytest.approx(eager, rel=1e-4)  # fused kernels reorder float sums, nothing more


def test_recompute_through_the_loop_matches_plain(prepared_run, tmp_path):
    plain = _run(prepared_run, tmp_path / "plain")
    full = _run(prepared_run, tmp_path / "full", model={"recompute": "full"})
    assert full == pytest.approx(plain, rel=1e-5)
