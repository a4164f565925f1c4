"""`llmcycle train` as a user drives it: no run's work silently lost or stale (issue 17).

A fresh train into a run that holds checkpoints refuses (or starts over with --overwrite), flags
that fail validation never reach config.json, and a budget given on --resume is the one obeyed.
"""

from __future__ import annotations

import shutil

import pytest

from llmcycle import rundir
from llmcycle.cli import main


@pytest.fixture
def run(prepared_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(prepared_run, dst)
    return dst


def test_fresh_train_over_checkpoints_refuses_then_overwrite_starts_over(run, capsys):
    assert main(["train", "--run", str(run), "--max-steps", "20", "--ckpt-every", "10", "--quiet"]) == 0
    before = [p.name for p in rundir.list_checkpoints(run)]
    assert before == ["step_000010", "step_000020"]
    assert main(["train", "--run", str(run), "--max-steps", "5", "--ckpt-every", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already holds checkpoints" in err and "--resume" in err and "--overwrite" in err
    assert [p.name for p in rundir.list_checkpoints(run)] == before  # nothing touched
    assert rundir.load_config(run).train.max_steps == 20
    assert main(["train", "--run", str(run), "--max-steps", "5", "--ckpt-every", "1", "--overwrite", "--quiet"]) == 0
    assert [p.name for p in rundir.list_checkpoints(run)] == ["step_000004", "step_000005"]  # the new run's own
    assert rundir.load_config(run).train.max_steps == 5
    assert max(r["step"] for r in rundir.read_metrics(run)) == 5  # a fresh log, not the old run's


@pytest.mark.parametrize("flags, message", [
    (["--lr", "inf"], "lr must be a finite number"),
    (["--lr", "nan"], "lr must be a finite number"),
    (["--vocab-size", "10"], "set --vocab-size >= "),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--beta2", "1.5"], "beta1 and beta2 must be in [0, 1)"),
])
def test_flags_that_fail_never_reach_config_json(run, capsys, flags, message):
    saved = rundir.config_path(run).read_text()
    assert main(["train", "--run", str(run), "--max-steps", "1", "--quiet", *flags]) == 2
    assert message in capsys.readouterr().err
    assert rundir.config_path(run).read_text() == saved
    assert main(["train", "--run", str(run), "--max-steps", "1", "--quiet"]) == 0  # a plain train still works


def test_budget_given_on_resume_is_obeyed_and_named(run, capsys):
    assert main(["train", "--run", str(run), "--max-steps", "5", "--ckpt-every", "5", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--run", str(run), "--resume", "--max-steps", "10", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "trained 10 steps" in out and "stopped by max_steps" in out
    assert rundir.latest_checkpoint(run).name == "step_000010"


def test_resume_cannot_change_the_architecture(run, capsys):
    assert main(["train", "--run", str(run), "--max-steps", "2", "--quiet"]) == 0
    assert main(["train", "--run", str(run), "--resume", "--max-steps", "4", "--d-model", "64", "--quiet"]) == 2
    assert "--resume continues the saved model" in capsys.readouterr().err


def test_one_writer_per_run_and_a_dead_holders_lock_is_taken_over(run, capsys):
    import subprocess
    import sys
    import textwrap

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from llmcycle import rundir
        with rundir.writer_lock({str(run)!r}, "train"):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--run", str(run), "--max-steps", "1", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"being written by pid {holder.pid} (llmcycle train" in err
        assert not rundir.list_checkpoints(run)  # the refused train wrote nothing
    finally:
        holder.kill()  # SIGKILL: the lock file keeps its text, the kernel drops the lock
        holder.wait()
    assert main(["train", "--run", str(run), "--max-steps", "1", "--quiet"]) == 0
    assert f"took over the lock of pid {holder.pid}" in capsys.readouterr().out
