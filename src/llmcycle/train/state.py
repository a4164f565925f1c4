"""The training loop's state (what a checkpoint's state.json holds) and its budget.

    LoopState      step, tokens, elapsed seconds, the fixed step count, which budget fixed it, last eval
    Budget         turns max_steps / max_tokens / max_time into that step count

A step or token budget fixes the step count at once. A wall-clock budget fixes it after timing
`TIMING_STEPS` steps (the first is excluded: it warms caches up), so a run ends at a known step
and its learning-rate schedule reaches its end exactly there; the count is then saved with the
state, and a resumed run keeps it unless the budget itself was changed on the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from llmcycle.config import TrainConfig
from llmcycle.runtime import print0

TIMING_STEPS = 5  # steps timed before a wall-clock budget is turned into a fixed step count
BUDGETS = ("max_steps", "max_tokens", "max_time")


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # training tokens seen (all ranks)
    elapsed: float = 0.0  # seconds spent in training steps (evaluation and checkpoints excluded)
    tokens_per_step: int = 0  # global batch x sequence length
    total_steps: int | None = None  # the fixed step count; None until a time budget has been timed
    timed: bool = True  # False while a wall-clock budget is still being timed
    stopped_by: str | None = None  # the budget that fixed total_steps: max_steps | max_tokens | max_time
    budget: dict = field(default_factory=dict)  # the budgets total_steps was fixed for
    val: dict = field(default_factory=dict)  # the last evaluation: val_loss, val_bpb, val_loss/SOURCE
    flops_per_token: float = 0.0  # training FLOPs per token (set at the end)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LoopState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def budget_of(t: TrainConfig) -> dict:
    return {name: getattr(t, name) for name in BUDGETS}


class Budget:
    """When the loop stops: a step count fixed from the config's budgets."""

    def __init__(self, t: TrainConfig, state: LoopState, resumed: bool) -> None:
        self.t, self.state = t, state
        self.step_times: list[float] = []
        self.eval_time = 0.0
        if resumed and state.budget == budget_of(t):
            return  # the same budgets: the saved step count stands (the schedule must not move)
        before = state.total_steps
        state.budget = budget_of(t)
        state.total_steps, state.stopped_by = self._fixed()
        state.timed = t.max_time is None
        if resumed:
            end = state.total_steps if state.timed else "a step fixed after timing"
            print0(f"budget changed to {self._describe()}: the schedule now ends at {end} (was step {before})")

    def _describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in budget_of(self.t).items() if v is not None)

    def _fixed(self) -> tuple[int | None, str | None]:
        """The step count from the step and token budgets (the smaller), and which one it was."""
        t, per_step = self.t, self.state.tokens_per_step
        options = []
        if t.max_steps is not None:
            options.append((t.max_steps, "max_steps"))
        if t.max_tokens is not None:
            options.append((max(1, t.max_tokens // per_step), "max_tokens"))
        return min(options) if options else (None, None)

    def done(self) -> bool:
        s = self.state
        return s.total_steps is not None and s.step >= s.total_steps

    def after_step(self, seconds: float) -> bool:
        """Record a step's time; True when this fixed the step count of a wall-clock budget."""
        self.step_times.append(seconds)
        if self.state.timed or len(self.step_times) != TIMING_STEPS + 1:
            return False
        per_step = sum(self.step_times[1:]) / TIMING_STEPS + self.eval_time / self.t.eval_every
        s = self.state
        total = s.step + int(max(0.0, self.t.max_time - s.elapsed) / per_step)
        fixed, name = self._fixed()
        total, s.stopped_by = (fixed, name) if fixed is not None and fixed <= total else (total, "max_time")
        if dist.is_initialized():  # every rank must agree on the schedule
            tt = torch.tensor([total], dtype=torch.long)
            dist.broadcast(tt, src=0)
            total = int(tt.item())
        s.total_steps, s.timed = max(total, s.step + 1), True
        return True
