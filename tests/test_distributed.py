"""Distributed training on CPU: gloo, 2 processes, a tiny model.

One spawn of two ranks trains DDP, FSDP (full) and FSDP (grad_op) runs and resumes a
single-process checkpoint on 2 ranks; the main process trains the single-process reference and
resumes a 2-rank FSDP checkpoint on 1 process. All must give the same losses and weights
(within 1e-5) as one process with the same global batch: 8 sequences per step, micro-batches of 2,
so 4 micro-steps on 1 process and 2 per rank on 2. A constant learning rate after warmup
(min_lr_ratio=1) makes the schedule independent of the step budget, so a run stopped at step 3
and resumed to step 6 is comparable with one that ran 6 steps. A separate launch through
torchrun's launcher API kills a rank mid-run: the error names it and the last checkpoint loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors import safe_open
from safetensors.torch import load_file

from llmcycle.config import RunConfig
from llmcycle.rundir import config_path, latest_checkpoint, list_checkpoints, load_model
from llmcycle.train.launch import free_port

STEPS, WORLD = 6, 2
PARITY = dict(max_steps=STEPS, batch_size=8, micro_batch_size=2, ckpt_every=3, eval_every=3, eval_batches=1,
              log_every=1, warmup_steps=2, min_lr_ratio=1.0, keep_checkpoints=2)
TOL = 1e-5


def _setup(src: Path, dst: Path, ckpt: Path | None = None, **train_kw) -> RunConfig:
    """A run dir sharing `src`'s data, with the parity config (+ overrides) and optionally one checkpoint."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "data", dst / "data")
    cfg = RunConfig.load(config_path(src))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **{**PARITY, **train_kw}))
    cfg.save(config_path(dst))
    if ckpt is not None:
        shutil.copytree(ckpt, dst / "checkpoints" / ckpt.name)
    return cfg


def _worker(rank: int, port: int, jobs: list, out: str) -> None:
    """One of WORLD ranks: run each (run dir, config, resume) job, then measure per-rank model-state bytes."""
    from llmcycle.train.loop import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    try:
        for run, cfg, resume in jobs:
            train(Path(run), RunConfig.from_dict(cfg), resume=resume, progress=False)
        Path(out, f"memory_{rank}.json").write_text(json.dumps(_measure_memory()))
    finally:
        dist.destroy_process_group()


def _measure_memory() -> dict:
    """Bytes each rank holds after one step of a small model under each strategy (see bench/train_parallel.py)."""
    from llmcycle.config import ModelConfig
    from llmcycle.models import build_model
    from llmcycle.train.parallel import model_state_bytes, wrap_model

    out = {}
    for name, strategy, shard in (("ddp", "ddp", "full"), ("fsdp", "fsdp", "full"),
                                  ("fsdp_grad_op", "fsdp", "grad_op")):
        torch.manual_seed(0)
        model = build_model(ModelConfig(vocab_size=256, n_layer=2, d_model=64, n_head=4, max_seq_len=32))
        n_params = sum(p.numel() for p in model.parameters())
        wrapped = wrap_model(model, strategy, torch.device("cpu"), shard)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randint(0, 256, (2, 17))
        wrapped(x[:, :-1], x[:, 1:])[1].backward()
        optimizer.step()
        out[name] = {"n_params": n_params, **model_state_bytes(model, optimizer)}
    return out


def _losses(run: Path, key: str = "loss") -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if key in r}


def assert_same_run(run: Path, ref: Path, first_step: int = 0) -> None:
    got, want = _losses(run), _losses(ref)
    assert sorted(got) == list(range(first_step, STEPS)), sorted(got)
    for s in got:
        assert abs(got[s] - want[s]) < TOL, (run.name, s, got[s], want[s])
    for s, v in _losses(run, "val_loss").items():
        assert abs(v - _losses(ref, "val_loss")[s]) < TOL, (run.name, "val", s)
    assert latest_checkpoint(run).name == latest_checkpoint(ref).name == f"step_{STEPS:06d}"
    wa, wb = (load_file(str(latest_checkpoint(r) / "model.safetensors")) for r in (run, ref))
    assert wa.keys() == wb.keys()  # the exported file is the single-process one, tied tensor once
    for k in wa:
        assert (wa[k] - wb[k]).abs().max().item() < TOL, (run.name, k)


@pytest.fixture(scope="module")
def runs(prepared_run, tmp_path_factory) -> dict[str, Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 spinning OpenMP threads on 2 busy cores run a tiny model ~100x slower
    try:
        return _runs(prepared_run, tmp_path_factory.mktemp("dist"))
    finally:
        torch.set_num_threads(threads)


def _runs(prepared_run: Path, root: Path) -> dict[str, Path]:
    from llmcycle.train.loop import train

    cfg = _setup(prepared_run, root / "ref")
    train(root / "ref", cfg, progress=False)  # one process: 4 micro-steps of 2 sequences
    step3 = list_checkpoints(root / "ref")[0]
    assert step3.name == "step_000003"
    jobs = []
    for name, kw in (("ddp", dict(strategy="ddp")), ("fsdp", dict(strategy="fsdp")),
                     ("fsdp_grad_op", dict(strategy="fsdp", fsdp_shard="grad_op")),
                     ("single_to_2", dict(strategy="fsdp"))):
        c = _setup(prepared_run, root / name, step3 if name == "single_to_2" else None, **kw)
        jobs.append((str(root / name), c.to_dict(), name == "single_to_2"))
    t0 = time.perf_counter()
    mp.spawn(_worker, args=(free_port(), jobs, str(root)), nprocs=WORLD, join=True)
    print(f"2-rank jobs took {time.perf_counter() - t0:.1f} s")
    for name, kw in (("fsdp_to_1", {}), ("fsdp_to_1_fsdp", dict(strategy="fsdp"))):  # 2 ranks' DCP -> 1 process
        c = _setup(prepared_run, root / name, list_checkpoints(root / "fsdp")[0], **kw)
        train(root / name, c, resume=True, progress=False)
    return {p.name: p for p in root.iterdir()}


@pytest.mark.parametrize("name", ["ddp", "fsdp", "fsdp_grad_op"])
def test_two_ranks_match_one_process(runs, name):
    assert_same_run(runs[name], runs["ref"])


@pytest.mark.parametrize("name", ["single_to_2", "fsdp_to_1", "fsdp_to_1_fsdp"])
def test_resume_on_another_world_size_matches_uninterrupted(runs, name):
    assert_same_run(runs[name], runs["ref"], first_step=3)


def test_sharded_checkpoint_is_complete_and_exported(runs):
    ckpt = latest_checkpoint(runs["fsdp"])
    assert sorted(p.name for p in ckpt.iterdir()) == ["dcp", "model.safetensors", "rng_0.json", "rng_1.json", "state.json"]
    assert len(list((ckpt / "dcp").glob("*.distcp"))) == WORLD  # each rank wrote its part
    assert not list((runs["fsdp"] / "checkpoints").glob(".*tmp"))
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"head.weight": "embed.tok.weight"}  # as safetensors.save_model writes
    model, _ = load_model(runs["fsdp"])  # what generate / eval read
    assert torch.isfinite(next(model.parameters())).all()


def _planner(n_params: int, strategy: str) -> dict:
    try:
        from llmcycle.plan.memory import model_state_bytes
    except ImportError:  # the ZeRO paper's formulas (Rajbhandari et al. 2020, Fig. 1) at fp32: 4 + 4 + 8 bytes
        def model_state_bytes(n, dtype, optimizer, strategy, dp):
            stage = {"ddp": 0, "zero2": 2, "zero3": 3}[strategy]
            return {"weights": 4 * n / (dp if stage >= 3 else 1), "grads": 4 * n / (dp if stage >= 2 else 1),
                    "optimizer": 8 * n / dp if stage else 8 * n}
    return model_state_bytes(n_params, dtype="fp32", optimizer="adamw", strategy=strategy, dp=WORLD)


def test_measured_model_state_matches_planner(runs):
    ranks = [json.loads((runs["ref"].parent / f"memory_{r}.json").read_text()) for r in range(WORLD)]
    for name, strategy in (("ddp", "ddp"), ("fsdp", "zero3")):
        n = ranks[0][name]["n_params"]
        plan = _planner(n, strategy)
        for key, plan_key in (("params", "weights"), ("grads", "grads"), ("optimizer", "optimizer")):
            got = [m[name][key] for m in ranks]
            if name == "ddp":
                assert got == [plan[plan_key]] * WORLD, (name, key)
            else:  # dim-0 shards: uneven by at most one row per tensor, and together exactly the whole
                assert sum(got) == plan[plan_key] * WORLD, (name, key)
                assert all(abs(g - plan[plan_key]) / plan[plan_key] < 0.02 for g in got), (name, key, got)
    go = [m["fsdp_grad_op"] for m in ranks]  # at rest grad_op holds what full sharding holds
    assert go == [m["fsdp"] for m in ranks]


def _dying_worker(run: str, cfg: dict) -> None:
    """Train with 2 ranks; rank 1 dies at step 5, after the step-4 checkpoint."""
    from llmcycle.train import loop

    torch.set_num_threads(1)
    real = loop._train_step

    def step(wrapped, optimizer, data, step, *args):
        if step == 5 and dist.get_rank() == 1:
            os._exit(7)
        return real(wrapped, optimizer, data, step, *args)

    loop._train_step = step
    loop.train(Path(run), RunConfig.from_dict(cfg), progress=False)


def test_dead_worker_stops_the_run_naming_its_rank(prepared_run, tmp_path):
    from llmcycle.train.launch import WorkerFailed, launch

    cfg = _setup(prepared_run, tmp_path, strategy="ddp", max_steps=10, ckpt_every=2, eval_every=100, dist_timeout=30)
    t0 = time.perf_counter()
    with pytest.raises(WorkerFailed, match=r"rank 1 .*exit code 7") as err:
        launch(WORLD, _dying_worker, str(tmp_path), cfg.to_dict())
    assert err.value.rank == 1 and time.perf_counter() - t0 < 60
    assert latest_checkpoint(tmp_path).name == "step_000004"  # the last complete one, loadable
    model, _ = load_model(tmp_path)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_impossible_distributed_settings_are_clear_errors(prepared_run, tmp_path, capsys):
    from llmcycle.cli import main
    from llmcycle.config import TrainConfig

    _setup(prepared_run, tmp_path)
    assert main(["train", "--run", str(tmp_path), "--nproc", "2", "--quiet"]) == 2
    assert "--strategy ddp or fsdp" in capsys.readouterr().err
    with pytest.raises(ValueError, match="fsdp_shard"):
        TrainConfig(max_steps=1, fsdp_shard="zero3")
    with pytest.raises(ValueError, match="backend"):
        TrainConfig(max_steps=1, backend="mpi")
