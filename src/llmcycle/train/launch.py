"""Worker processes on this machine, started as torchrun would start them (its launcher API).

    launch(nproc, fn, *args)                 N workers running fn; errors name the rank that failed
    train_processes(nproc, run, cfg, ...)    `llmcycle train --nproc N`

A worker that dies stops the others; `WorkerFailed` says which rank failed first (a rank that
only lost its peer is reported as a consequence, not the cause) and where the last complete
checkpoint is. Under `torchrun` none of this is used: torchrun starts the workers itself.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from llmcycle.config import RunConfig
from llmcycle.rundir import latest_checkpoint
from llmcycle.train.loop import train

class WorkerFailed(RuntimeError):
    """A worker process died; the others were stopped. `.rank` is the first rank that failed."""

    def __init__(self, message: str, rank: int, exitcode: int) -> None:
        super().__init__(message)
        self.rank, self.exitcode = rank, exitcode


# A rank that loses its peer fails too; these messages mark such a consequence, not the cause.
COLLATERAL = ("Connection closed", "Connection reset", "Broken pipe", "DistBackendError", "timed out", "Timeout")


def _reason(failure) -> str:
    """The last line of the worker's Python error, or what is known about an exit without one."""
    msg = failure.message
    if isinstance(msg, dict):  # an error file written by @record: {"message": ..., "extraInfo": {...}}
        msg = msg.get("message", "")
    lines = str(msg).strip().splitlines()
    if failure.exitcode < 0:
        return f"killed by signal {failure.signal_name()}"
    if not failure.error_file_data.get("message"):  # os._exit, a crash in C, the OOM killer...
        return "it exited without a Python error (see its output above)"
    return lines[-1] if lines else "no message"


def _failure_message(err) -> WorkerFailed:
    """Turn elastic's ChildFailedError into one sentence naming the rank that failed first."""
    def order(rank):
        f = err.failures[rank]
        return any(c in str(f.message) for c in COLLATERAL), f.timestamp, rank

    ranks = sorted(err.failures, key=order)
    first = err.failures[ranks[0]]
    same = [r for r in ranks[1:] if _reason(err.failures[r]) == _reason(first)]  # e.g. a checkpoint write
    msg = (f"training stopped: rank {ranks[0]} (local rank {first.local_rank}, pid {first.pid})"  # all ranks saw fail
           f"{''.join(f' and rank {r}' for r in same)} failed with exit code {first.exitcode}: {_reason(first)}")
    for r in ranks[1:]:
        if r not in same:
            msg += f"; rank {r} failed too: {_reason(err.failures[r])}"
    return WorkerFailed(msg + "; the other workers were stopped", ranks[0], first.exitcode)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LaunchOptions:
    """torchrun's single-node defaults: c10d rendezvous on localhost, no restarts."""

    max_restarts: int = 0
    monitor_interval: float = 0.1  # seconds between the agent's checks on its workers
    rdzv_timeout: int = 60  # seconds to wait for all workers to join


def launch(nproc: int, fn, *args, options: LaunchOptions | None = None) -> dict[int, object]:
    """Run `fn(*args)` in `nproc` worker processes on this machine, exactly as torchrun would
    (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT set). Returns {rank: return value}.
    A worker that dies stops the others and raises WorkerFailed naming its rank."""
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    o = options or LaunchOptions()
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, rdzv_backend="c10d",
                          rdzv_endpoint=f"127.0.0.1:{free_port()}", rdzv_timeout=o.rdzv_timeout,
                          run_id=f"llmcycle-{uuid.uuid4().hex[:8]}", max_restarts=o.max_restarts,
                          monitor_interval=o.monitor_interval, start_method="spawn")
    try:
        return elastic_launch(config, fn)(*args)
    except ChildFailedError as e:
        raise _failure_message(e) from None


def train_processes(nproc: int, run, cfg, resume: bool = False, progress: bool = True, overwrite: bool = False):
    """`llmcycle train --nproc N`: N local workers running the training loop; rank 0's final state."""
    if "WORLD_SIZE" in os.environ:
        raise ValueError("--nproc starts its own workers; under torchrun leave it out (torchrun's "
                         "--nproc_per_node says how many)")
    if cfg.train.strategy == "single" and nproc > 1:
        raise ValueError(f"--nproc {nproc} needs --strategy ddp or fsdp "
                         f"(single would train {nproc} unrelated replicas)")
    try:
        return launch(nproc, train_worker, str(run), cfg.to_dict(), resume, progress, overwrite)[0]
    except WorkerFailed as e:
        ckpt = latest_checkpoint(run)
        hint = f"; the last complete checkpoint is {ckpt} (continue with --resume)" if ckpt else \
            "; no checkpoint was saved"
        raise WorkerFailed(f"{e}{hint}", e.rank, e.exitcode) from None


def train_worker(run: str, cfg_dict: dict, resume: bool, progress: bool, overwrite: bool = False):
    """Entry point of one `llmcycle train --nproc N` worker (module level, so spawn can import it)."""
    return train(run, RunConfig.from_dict(cfg_dict), resume=resume, progress=progress, overwrite=overwrite)
