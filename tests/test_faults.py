"""Faults: SIGKILL inside checkpoint writes, full/unwritable disks, damaged or foreign checkpoints.

The full kill campaign (20+ kills, single process and DDP) is `bench/faults.py`; here two kills of a
single-process run, timed to land inside checkpoint writes, and the in-process failure cases.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from llmcycle import checkpoint, rundir
from llmcycle.cli import main
from llmcycle.config import RunConfig
from llmcycle.train.loop import train

BENCH = Path(__file__).resolve().parents[1] / "bench" / "faults.py"


def _faults():
    spec = importlib.util.spec_from_file_location("bench_faults", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _copy(prepared_run, dst, **train_kw) -> RunConfig:
    shutil.copytree(prepared_run / "data", dst / "data")
    cfg = RunConfig.load(rundir.config_path(prepared_run))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train_kw))
    cfg.save(rundir.config_path(dst))
    return cfg


@pytest.mark.slow  # three `llmcycle train` subprocesses: ~15 s idle, up to a minute on a busy machine
def test_sigkill_inside_checkpoint_writes_then_resume_is_bit_exact(prepared_run, tmp_path):
    f = _faults()
    ref, run = tmp_path / "ref", tmp_path / "run"
    cfg = _copy(prepared_run, ref, max_steps=6, ckpt_every=2, eval_every=1000, threads=1)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dropout=0.1))  # the RNG matters
    cfg.save(rundir.config_path(ref))
    shutil.copytree(ref, run)
    train(ref, cfg, progress=False)
    expected = f.final_state(ref)
    rng, resume, log = random.Random(1), False, tmp_path / "log"
    inside = 0  # a tiny model's checkpoint is written in milliseconds: a kill aimed at it may land after it
    for _ in range(8):
        if inside == 2 or not f.start_and_kill(run, resume, None, rng, "ckpt", 0, log):
            break  # two kills inside writes, or the run finished before a kill came
        inside += bool(list(rundir.checkpoints_dir(run).glob(".step_*.tmp")))
        resume = rundir.latest_checkpoint(run) is not None
    newest = rundir.latest_checkpoint(run)
    out = f.run_to_end(run, resume, None)
    if newest is not None:
        assert f"resumed from {newest.name}" in out
    assert f.debris(run) == []
    model_sd, opt_sd = f.final_state(run)
    assert f.equal(model_sd, expected[0]) and f.equal(opt_sd, expected[1])


# ------------------------------------------------------------------ full disk, unwritable


def test_full_disk_keeps_previous_checkpoint_and_says_how_much_space(prepared_run, tmp_path, monkeypatch, capsys):
    cfg = _copy(prepared_run, tmp_path, max_steps=5, ckpt_every=5, eval_every=1000)
    train(tmp_path, cfg, progress=False)
    good = rundir.latest_checkpoint(tmp_path)
    before = (good / rundir.WEIGHTS).read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)  # the optimizer write hits a full disk
    code = main(["train", "--run", str(tmp_path), "--resume", "--max-steps", "10", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "No space left on device" in err and "step_000010" in err
    assert "MB free there" in err and "needs about" in err and "step_000005 is intact" in err
    assert rundir.list_checkpoints(tmp_path) == [good] and (good / rundir.WEIGHTS).read_bytes() == before
    assert not rundir.remove_partial_checkpoints(tmp_path), "the failed write left its temporary directory"


@pytest.mark.parametrize("how", ["patched", "chmod"])
def test_unwritable_checkpoints_dir_is_a_clear_error(prepared_run, tmp_path, capsys, monkeypatch, how):
    if how == "chmod" and os.geteuid() == 0:
        pytest.skip("root ignores directory permissions (the patched case covers it)")
    cfg = _copy(prepared_run, tmp_path, max_steps=5, ckpt_every=5, eval_every=1000)
    train(tmp_path, cfg, progress=False)
    ck = rundir.checkpoints_dir(tmp_path)
    if how == "patched":
        def denied(final):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(final))

        monkeypatch.setattr(checkpoint, "begin_dir", denied)
    ck.chmod(0o555)
    try:
        code = main(["train", "--run", str(tmp_path), "--resume", "--max-steps", "10", "--quiet"])
    finally:
        ck.chmod(0o755)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == 2 and "Permission denied" in err and f"make {ck} writable" in err
    assert [p.name for p in rundir.list_checkpoints(tmp_path)] == ["step_000005"]


def test_checkpoint_size_counts_weights_and_optimizer_state():
    model = torch.nn.Linear(10, 10)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 10)).sum().backward()
    opt.step()
    assert checkpoint.checkpoint_bytes(model, opt) == 110 * 4 * 3 + 2 * 4  # weights, exp_avg, exp_avg_sq, steps


# ------------------------------------------------------------------ damaged or foreign checkpoints


@pytest.fixture()
def two_checkpoints(prepared_run, tmp_path):
    cfg = _copy(prepared_run, tmp_path, max_steps=4, ckpt_every=2, eval_every=1000, keep_checkpoints=0)
    train(tmp_path, cfg, progress=False)
    assert [p.name for p in rundir.list_checkpoints(tmp_path)] == ["step_000002", "step_000004"]
    return tmp_path, cfg


def _resume_to(run, cfg, steps, capsys):
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=steps))
    state = train(run, cfg, resume=True, progress=False)
    return state, capsys.readouterr().out


def test_truncated_newest_weights_resume_from_the_older_and_say_so(two_checkpoints, capsys):
    run, cfg = two_checkpoints
    w = rundir.step_dir(run, 4) / rundir.WEIGHTS
    w.write_bytes(w.read_bytes()[:1000])
    state, out = _resume_to(run, cfg, 6, capsys)
    assert "resumed from step_000002" in out and "step_000004" in out and str(w) in out
    assert state.step == 6


def test_missing_state_json_resumes_from_the_older(two_checkpoints, capsys):
    run, cfg = two_checkpoints
    rundir.state_path(rundir.step_dir(run, 4)).unlink()
    _, out = _resume_to(run, cfg, 6, capsys)
    assert "state.json is missing" in out and "resumed from step_000002" in out


def test_damaged_optimizer_and_rng_files_are_named(two_checkpoints, capsys):
    run, cfg = two_checkpoints
    rundir.optimizer_path(rundir.step_dir(run, 4)).write_bytes(b"\x00garbage")
    rundir.rng_path(rundir.step_dir(run, 2)).write_text("{not json")
    with pytest.raises(ValueError, match="none of the 2 checkpoints") as e:
        _resume_to(run, cfg, 6, capsys)
    assert "optimizer.pt cannot be read" in str(e.value)
    assert "rng.json is damaged" in capsys.readouterr().out


def test_checkpoint_of_another_config_is_named_on_load(two_checkpoints, tmp_path):
    run, cfg = two_checkpoints
    other = dataclasses.replace(cfg.model, d_model=48)
    from llmcycle.models import build_model

    with pytest.raises(ValueError, match=r"model\.safetensors do not fit the model.*different model config"):
        checkpoint.load(rundir.latest_checkpoint(run), build_model(other))
    with pytest.raises(ValueError, match="different model config"):  # through --resume: every checkpoint fails
        cfg2 = dataclasses.replace(cfg, model=other, train=dataclasses.replace(cfg.train, max_steps=6))
        train(run, cfg2, resume=True, progress=False)


def test_killed_between_the_renames_of_a_resave_restores_the_step(two_checkpoints):
    run, _ = two_checkpoints
    step4 = rundir.step_dir(run, 4)
    old = step4.with_name(f".{step4.name}.old.tmp")
    os.rename(step4, old)  # commit_dir moved the old copy aside, then the process died
    assert rundir.remove_partial_checkpoints(run) == [old.name]
    assert step4.is_dir() and rundir.latest_checkpoint(run) == step4


# ------------------------------------------------------------------ a tokenizer that does not match the data


def _swap_tokenizer(run: Path, how: str) -> Path:
    tok_file = rundir.tokenizer_path(run)
    if how == "other":  # another tokenizer altogether (a char vocabulary instead of the byte one)
        from llmcycle.data.tokenizer import char_tokenizer

        char_tokenizer(set("abcdefgh ")).save(tok_file.parent)
    else:  # the same size, two ids swapped: every "a" in the data would read as "b"
        spec = json.loads(tok_file.read_text(encoding="utf-8"))
        vocab = spec["model"]["vocab"]
        vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
        tok_file.write_text(json.dumps(spec), encoding="utf-8")
    return tok_file


@pytest.mark.parametrize("how", ["other", "edited"])
def test_a_tokenizer_swapped_after_prepare_is_refused_on_load(prepared_run, tmp_path, how):
    cfg = _copy(prepared_run, tmp_path, max_steps=2, eval_every=1000)
    meta = json.loads(rundir.meta_path(rundir.data_dir(tmp_path)).read_text())
    assert len(meta["tokenizer"]["sha256"]) == 64  # prepare recorded what the shards were made with
    tok_file = _swap_tokenizer(tmp_path, how)
    meta_file = rundir.meta_path(rundir.data_dir(tmp_path))
    with pytest.raises(ValueError) as e:  # train (fresh or --resume) reads the data
        train(tmp_path, cfg, progress=False)
    for fragment in (str(tok_file), str(rundir.data_dir(tmp_path)), "llmcycle prepare", "is not the tokenizer"):
        assert fragment in str(e.value)
    assert str(meta_file) in str(e.value) or how == "other"
    with pytest.raises(ValueError, match="is not the tokenizer the shards"):  # generate / eval / serve load it
        rundir.load_tokenizer(tmp_path)
    assert not rundir.list_checkpoints(tmp_path)


def test_a_legacy_meta_without_the_tokenizer_hash_still_loads(prepared_run, tmp_path):
    cfg = _copy(prepared_run, tmp_path, max_steps=2, eval_every=1000)
    meta_file = rundir.meta_path(rundir.data_dir(tmp_path))
    meta = json.loads(meta_file.read_text())
    del meta["tokenizer"]["sha256"]
    meta_file.write_text(json.dumps(meta))
    assert rundir.load_tokenizer(tmp_path).vocab_size == meta["vocab_size"]
    assert train(tmp_path, cfg, progress=False).step == 2
    from llmcycle.data.tokenizer import char_tokenizer

    char_tokenizer(set("abc")).save(rundir.data_dir(tmp_path))  # without the hash, the vocabulary size still tells
    with pytest.raises(ValueError, match="it has 3 tokens, the data 292"):
        rundir.load_tokenizer(tmp_path)


# ------------------------------------------------------------------ --overwrite: never a half-deleted run


class _Killed(BaseException):
    """Stands for SIGKILL at one point of a write: nothing after it runs, no handler sees it."""


def _tree(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_overwrite_killed_at_every_step_leaves_the_run_whole_or_gone(two_checkpoints, tmp_path_factory, monkeypatch):
    """`discard_training` (what --overwrite does) is cut at each of its renames and deletions in turn;
    after recovery the earlier run is either all there, byte for byte, or all gone: never half."""
    run, cfg = two_checkpoints
    outputs = {k: v for k, v in _tree(run).items() if k.split("/")[0] in rundir.TRAINING_OUTPUTS}
    assert any(k.startswith("checkpoints/step_000004/") for k in outputs) and rundir.METRICS in outputs
    real_rename, real_rmtree = os.rename, shutil.rmtree
    outcomes, point = [], 0
    while True:
        work = tmp_path_factory.mktemp("overwrite")
        shutil.copytree(run, work, dirs_exist_ok=True)
        calls = 0

        def cut(real):
            def op(*a, **k):
                nonlocal calls
                calls += 1
                if calls > point:
                    raise _Killed
                return real(*a, **k)
            return op

        monkeypatch.setattr(os, "rename", cut(real_rename))
        monkeypatch.setattr(shutil, "rmtree", cut(real_rmtree))
        try:
            rundir.discard_training(work)
            finished = True
        except _Killed:
            finished = False
        monkeypatch.setattr(os, "rename", real_rename)
        monkeypatch.setattr(shutil, "rmtree", real_rmtree)
        rundir.remove_partial_checkpoints(work)  # what the next train does first
        left = {k: v for k, v in _tree(work).items() if k.split("/")[0] in rundir.TRAINING_OUTPUTS}
        assert left in (outputs, {}), f"cut after {point} operations: a half-deleted run: {sorted(left)}"
        assert not [p.name for p in work.iterdir() if p.name.endswith(".tmp")], "debris left"
        assert (work / rundir.CONFIG).is_file() and rundir.meta_path(rundir.data_dir(work)).is_file()
        outcomes.append("whole" if left else "gone")
        if finished:
            break
        point += 1
    assert point >= 3 and outcomes[0] == "whole" and outcomes[-1] == "gone", outcomes
    state = train(work, cfg, overwrite=True, progress=False)  # and a fresh run starts in it
    assert state.step == cfg.train.max_steps and len(rundir.read_metrics(work)) > 0


def test_train_overwrite_replaces_checkpoints_and_log(two_checkpoints):
    run, cfg = two_checkpoints
    before = rundir.read_metrics(run)
    cfg3 = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=3, ckpt_every=3))
    train(run, cfg3, overwrite=True, progress=False)
    assert [p.name for p in rundir.list_checkpoints(run)] == ["step_000003"]
    after = rundir.read_metrics(run)
    assert after and max(m["step"] for m in after) <= 3 < max(m["step"] for m in before)  # a new log, not appended
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ one rank's sharded write fails

FAILING = {  # where: (rank that fails, the errno, what it fails in)
    "dcp": (1, errno.ENOSPC, "writing its shard of"),  # inside DCP's own collective save
    "rng": (1, errno.ENOSPC, "writing "),  # a file each rank writes alone, after DCP
    "weights": (0, errno.EACCES, "model.safetensors"),  # the full weights, rank 0 alone
}


def _sharded_writer_worker(rank: int, port: int, run: str, cfg: dict, where: str, out: str) -> None:
    """One of 2 gloo ranks in a process group of the caller's (no launcher to stop the others): train,
    with the writer of `where` patched to fail on one rank at the step-4 checkpoint; record the outcome."""
    from datetime import timedelta

    import torch.distributed as dist
    import torch.distributed.checkpoint.filesystem as dcp_fs

    from llmcycle.checkpoint import CheckpointWriteError

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=cfg["train"]["dist_timeout"]))
    bad_rank, code, _ = FAILING[where]

    def fail(path) -> bool:
        return rank == bad_rank and ".step_000004.tmp" in str(path)

    def err(path):
        return OSError(code, os.strerror(code), str(path))

    if where == "dcp":
        real_write = dcp_fs.FileSystemWriter.write_data

        def write_data(self, plan, planner):
            if fail(self.path):
                raise err(self.path)
            return real_write(self, plan, planner)
        dcp_fs.FileSystemWriter.write_data = write_data
    elif where == "rng":
        real_text = checkpoint.atomic_write_text

        def atomic_write_text(path, text):
            if fail(path) and Path(path).name.startswith("rng_"):
                raise err(path)
            return real_text(path, text)
        checkpoint.atomic_write_text = atomic_write_text
    else:
        real_file = checkpoint.save_file

        def save_file(tensors, path, metadata=None):
            if fail(path):
                raise err(path)
            return real_file(tensors, path, metadata=metadata)
        checkpoint.save_file = save_file
    t0 = time.perf_counter()
    try:
        train(Path(run), RunConfig.from_dict(cfg), progress=False)
        result = {"error": None}
    except CheckpointWriteError as e:
        result = {"error": "CheckpointWriteError", "message": str(e)}
    except BaseException as e:  # a timeout or anything else: the test says what
        result = {"error": type(e).__name__, "message": str(e)[:2000]}
    result["seconds"] = time.perf_counter() - t0
    Path(out, f"rank_{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes per case: ~10-20 s each on a busy 2-core machine
@pytest.mark.parametrize("where", list(FAILING))
def test_one_ranks_failed_checkpoint_write_stops_every_rank_at_once(prepared_run, tmp_path, where):
    """Without a launcher to stop them, the ranks that wrote their part learn of the failure by
    themselves (not at --dist-timeout), every rank says which rank failed and what, and the previous
    checkpoint stays whole and loadable."""
    import torch.multiprocessing as mp

    from llmcycle.train.launch import free_port

    timeout = 60  # a rank left waiting would report a timeout after this (and the test fail)
    cfg = _copy(prepared_run, tmp_path / "run", strategy="fsdp" if where == "dcp" else "ddp", max_steps=6,
                ckpt_every=2, eval_every=1000, batch_size=8, micro_batch_size=2, dist_timeout=timeout,
                keep_checkpoints=0)
    ctx = mp.start_processes(_sharded_writer_worker, args=(free_port(), str(tmp_path / "run"), cfg.to_dict(), where,
                                                           str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 3 * timeout
    try:
        while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):  # False while one is still running
            assert time.monotonic() < deadline, "the ranks did not end"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    bad_rank, code, what = FAILING[where]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank_{rank}.json").read_text())
        assert got["error"] == "CheckpointWriteError", got
        msg = got["message"]
        assert f"rank {bad_rank} of 2 failed" in msg and what in msg and os.strerror(code) in msg, msg
        assert "step_000004" in msg and "step_000002 is intact" in msg and "--resume" in msg, msg
        assert got["seconds"] < timeout, got  # ended by the failure, not by the process group's timeout
    run = tmp_path / "run"
    assert [p.name for p in rundir.list_checkpoints(run)] == ["step_000002"]
    assert not list(rundir.checkpoints_dir(run).glob(".*tmp")), "debris left"
    from llmcycle.models import build_model

    model = build_model(cfg.model)
    assert checkpoint.load(rundir.latest_checkpoint(run), model)["step"] == 2  # whole, loadable


def test_a_failure_every_rank_shares_is_said_once(tmp_path):
    """Under the launcher every rank raises the same checkpoint error: one sentence names them all."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from llmcycle.train.launch import _failure_message

    def failure(rank, message, timestamp):
        path = tmp_path / f"error_{rank}.json"
        path.write_text(json.dumps({"message": {"message": message, "extraInfo": {"timestamp": timestamp}}}))
        return ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=1, error_file=str(path))

    same = "CheckpointWriteError: could not write checkpoint step_000004: rank 1 of 2 failed writing rng_1.json"
    err = _failure_message(ChildFailedError("train", {0: failure(0, same, 2), 1: failure(1, same, 1)}))
    assert str(err).count("could not write checkpoint") == 1 and "rank 1 (local rank 1, pid 101) and rank 0" in str(err)
    err = _failure_message(ChildFailedError("train", {0: failure(0, "DistBackendError: Connection closed", 2),
                                                      1: failure(1, "ValueError: boom", 3)}))
    assert str(err).startswith("training stopped: rank 1 ") and "rank 0 failed too: DistBackendError" in str(err)


def test_a_pickled_rng_state_is_refused_not_unpickled(two_checkpoints):
    run, cfg = two_checkpoints
    ckpt = rundir.latest_checkpoint(run)
    rundir.rng_path(ckpt).rename(ckpt / "rng.pt")  # llmcycle 0.1's pickle (here: any bytes; never opened)
    from llmcycle.models import build_model
    from llmcycle.train.optim import build_optimizer

    model = build_model(cfg.model)
    with pytest.raises(ValueError, match=r"rng\.pt.*unpickling runs code.*--init-from"):
        checkpoint.load(ckpt, model, build_optimizer(model, cfg.train))
