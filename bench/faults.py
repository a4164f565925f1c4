"""Fault campaign: SIGKILL `llmcycle train` at random moments, resume, and prove nothing was lost.

Each trial copies a tiny prepared run (byte tokenizer, 2-layer model with dropout, a checkpoint
every `--ckpt-every` steps, fp32 on CPU), starts `llmcycle train` as a subprocess in its own process
group and kills the whole group (the launcher and, under `--nproc 2`, both DDP workers: a power cut)
with SIGKILL, either after a random delay or the moment a `.step_N.tmp` checkpoint directory appears
(plus a random 0-30 ms, so the kill lands inside the write). It then resumes (`--resume`; a fresh
start when no checkpoint existed yet), killing that too, `kills_per_trial` times, and finally lets it
finish. After every kill and at the end it checks that

    - the resume continued from the newest whole checkpoint present after the kill;
    - no temporary debris is left once the resumed run ends (`.step_*.tmp`, `.*.old.tmp`, `.lock`);
    - the final weights AND optimizer state equal an uninterrupted run's bit for bit.

Trials take the layouts in turn: a single process, 2-process DDP (`--strategy ddp --nproc 2`) and
2-process FSDP (`--strategy fsdp --nproc 2`, sharded DCP checkpoints), each compared with an
uninterrupted run of the same layout. Prints the counts of kills, of kills that
landed inside a checkpoint write, and of exact resumes. CPU only; the machine may be shared.

    nice -n 10 .venv/bin/python bench/faults.py [--kills 20] [--kills-per-trial 5] [--seed 0] [--layouts single,ddp,fsdp]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

import torch  # noqa: E402

from llmcycle import checkpoint, rundir  # noqa: E402
from llmcycle.atomic import stale_temporaries  # noqa: E402
from llmcycle.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from llmcycle.models import build_model  # noqa: E402
from llmcycle.train.optim import build_optimizer  # noqa: E402

RESUMED = re.compile(r"resumed from (step_\d+)")


def make_base(root: Path, steps: int, ckpt_every: int, strategy: str) -> Path:
    """A prepared run whose config.json trains `steps` steps with a checkpoint every `ckpt_every`."""
    from llmcycle.data.prepare import prepare

    base = root / f"base_{strategy}"
    data = DataConfig(tokenizer="byte", max_bytes=200_000)
    meta = prepare(data, rundir.data_dir(base), progress=False)
    model = ModelConfig(vocab_size=meta["vocab_size"], n_layer=2, d_model=32, n_head=4, max_seq_len=64, dropout=0.1)
    train = TrainConfig(seq_len=32, batch_size=8, max_steps=steps, eval_every=1000, eval_batches=1,
                        ckpt_every=ckpt_every, keep_checkpoints=2, warmup_steps=2, lr=3e-3, threads=1,
                        strategy=strategy, dist_timeout=60)
    RunConfig(model=model, data=data, train=train).save(rundir.config_path(base))
    return base


def copy_run(base: Path, dst: Path) -> Path:
    shutil.copytree(base, dst)
    return dst


def command(run: Path, resume: bool, nproc: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "llmcycle", "train", "--run", str(run), "--quiet"]
    cmd += ["--resume"] if resume else ["--overwrite"]
    return cmd + (["--nproc", str(nproc)] if nproc else [])


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_to_end(run: Path, resume: bool, nproc: int | None, timeout: float = 600) -> str:
    p = subprocess.run(command(run, resume, nproc), env=_env(), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"train failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout + p.stderr


def start_and_kill(run: Path, resume: bool, nproc: int | None, rng: random.Random, mode: str,
                   max_wait: float, log: Path) -> bool:
    """Start training (output to `log`) and SIGKILL its whole process group. mode "random": after a
    random delay; "ckpt": when a checkpoint temp dir appears (+0-30 ms). Returns True if it was
    killed (False: it finished first)."""
    with open(log, "w") as out:
        p = subprocess.Popen(command(run, resume, nproc), env=_env(), stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
    ckpts = rundir.checkpoints_dir(run)
    seen = {q.name for q in ckpts.glob(".step_*.tmp")} if ckpts.is_dir() else set()
    deadline = time.monotonic() + (rng.uniform(1.0, max_wait) if mode == "random" else 600)
    killed = False
    while p.poll() is None:
        now = time.monotonic()
        if mode == "ckpt" and ckpts.is_dir() and any(q.name not in seen for q in ckpts.glob(".step_*.tmp")):
            time.sleep(rng.uniform(0, 0.03))
            deadline = now
        if now >= deadline:
            with_kill(p)
            killed = True
            break
        time.sleep(0.001 if mode == "ckpt" else 0.02)
    p.wait()
    return killed and p.returncode == -signal.SIGKILL


def with_kill(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def debris(run: Path) -> list[str]:
    """Temporaries a killed writer left (checkpoint dirs, atomically written files) and a stale lock."""
    found = [str(q.relative_to(run)) for d in (run, rundir.checkpoints_dir(run)) for q in stale_temporaries(d)]
    return found + ([rundir.LOCK] if (run / rundir.LOCK).exists() else [])


def final_state(run: Path) -> tuple[dict, dict]:
    """(model state, optimizer state) of the run's newest checkpoint, loaded in this process (a DDP
    checkpoint is resharded onto one)."""
    cfg = rundir.load_config(run)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    opt = build_optimizer(model, dataclasses.replace(cfg.train, strategy="single"))
    checkpoint.load(rundir.latest_checkpoint(run), model, opt)
    return model.state_dict(), opt.state_dict()


def equal(a, b) -> bool:
    """Bit-for-bit equality of nested state dicts."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


@dataclasses.dataclass
class Totals:
    kills: int = 0
    in_ckpt_write: int = 0
    resumes: int = 0
    right_checkpoint: int = 0
    clean: int = 0
    trials: int = 0
    exact: int = 0

    def line(self) -> str:
        return (f"kills {self.kills} (inside a checkpoint write: {self.in_ckpt_write}); resumes {self.resumes}, "
                f"from the newest whole checkpoint {self.right_checkpoint}/{self.resumes}; trials {self.trials}, "
                f"no debris {self.clean}/{self.trials}, final weights+optimizer bit-exact {self.exact}/{self.trials}")


def _check_resume(log: str, expected: str | None, tot: Totals) -> None:
    """If this launch resumed and got as far as saying from where, was it the newest whole checkpoint?"""
    got = RESUMED.search(log)
    if expected is None or got is None:
        return
    tot.resumes += 1
    tot.right_checkpoint += got.group(1) == expected
    if got.group(1) != expected:
        print(f"  ! resumed from {got.group(1)}, expected {expected}")


def trial(base: Path, ref: tuple, dst: Path, nproc: int | None, kills: int, rng: random.Random, tot: Totals,
          max_wait: float) -> None:
    """Kill a run `kills` times (each resume is the next one killed), then let it finish and compare."""
    run = copy_run(base, dst)
    log = dst.with_suffix(".log")
    resume, done = False, 0
    while done < kills:
        expected = rundir.latest_checkpoint(run).name if resume else None
        killed = start_and_kill(run, resume, nproc, rng, rng.choice(["random", "ckpt"]), max_wait, log)
        _check_resume(log.read_text(), expected, tot)
        if not killed:
            break  # it finished before the kill: nothing more to interrupt in this trial
        done += 1
        tot.kills += 1
        tot.in_ckpt_write += bool(list(rundir.checkpoints_dir(run).glob(".step_*.tmp")))
        resume = rundir.latest_checkpoint(run) is not None
    if not (done < kills):  # the last kill still needs its finishing resume
        expected = rundir.latest_checkpoint(run).name if resume else None
        _check_resume(run_to_end(run, resume, nproc), expected, tot)
    tot.trials += 1
    left = debris(run)
    tot.clean += not left
    model_sd, opt_sd = final_state(run)
    exact = equal(model_sd, ref[0]) and equal(opt_sd, ref[1])
    tot.exact += exact
    print(f"  {dst.name}: {done} kills, debris {left or 'none'}, bit-exact {exact}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="total SIGKILLs across all trials")
    ap.add_argument("--kills-per-trial", type=int, default=5)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--ckpt-every", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-ddp", action="store_true", help="single-process trials only")
    ap.add_argument("--layouts", default="single,ddp,fsdp",
                    help="trial layouts in turn, from single (1 process), ddp, fsdp (2 processes each)")
    ap.add_argument("--max-wait", type=float, default=8.0, help="longest random delay before a kill (s)")
    args = ap.parse_args(argv)
    rng, tot, t0 = random.Random(args.seed), Totals(), time.perf_counter()
    names = ["single"] if args.no_ddp else [n.strip() for n in args.layouts.split(",") if n.strip()]
    if not names or set(names) - {"single", "ddp", "fsdp"}:
        ap.error(f"--layouts takes single, ddp, fsdp; got {args.layouts!r}")
    layouts = [(name, None if name == "single" else 2) for name in names]
    with tempfile.TemporaryDirectory(prefix="llmcycle-faults-") as tmp:
        root = Path(tmp)
        bases, refs = {}, {}
        for name, nproc in layouts:
            bases[name] = make_base(root, args.steps, args.ckpt_every, name)
            ref = copy_run(bases[name], root / f"ref_{name}")
            run_to_end(ref, False, nproc)
            refs[name] = final_state(ref)
            print(f"uninterrupted {name} run: {rundir.latest_checkpoint(ref).name}", flush=True)
        i = 0
        while tot.kills < args.kills:
            name, nproc = layouts[i % len(layouts)]
            trial(bases[name], refs[name], root / f"trial{i}_{name}", nproc,
                  min(args.kills_per_trial, args.kills - tot.kills), rng, tot, args.max_wait)
            i += 1
    print(f"{tot.line()}  [{time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}]")
    ok = tot.exact == tot.trials and tot.clean == tot.trials and tot.right_checkpoint == tot.resumes
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
