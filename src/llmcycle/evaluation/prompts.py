"""Zero-, one- and k-shot prompts: seeded exemplars that never include the item, fitted to the context.

    prompt = instruction SEP exemplar_1 SEP ... SEP exemplar_k SEP question
    exemplar = template(record) + answer(record);  question = template(item)

Exemplars are drawn per item with `random.Random(seed * 1_000_003 + index)` (as nanochat's
core_eval does), so the same seed gives the same prompts whatever the batch or the order of
evaluation. Draws are nested: the 1-shot exemplar is the first of the 5-shot ones, so shot counts
differ only by the exemplars added. The pool never offers the item itself: neither its own index
(when the pool is the evaluation data) nor any pool record whose question text equals the item's.

Fitting: when the prompt is longer than the budget (the model's context minus room for the
answer), exemplars are dropped, the last drawn first, never the question; `Prompt.used` says how
many were kept. If the question alone does not fit, `Prompt.overflow` is set and the model adapter
keeps the prompt's last tokens.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from llmcycle.evaluation.tasks import Task

SMALL_POOL = 1024  # pools up to this size are shuffled; larger ones sampled by rejection


@dataclass
class Prompt:
    text: str
    shots: int  # exemplars asked for
    used: int  # exemplars in the text after fitting
    exemplars: list[int]  # pool indices of the exemplars used, in prompt order
    tokens: int | None = None  # prompt length in tokens (when a token counter was given)
    overflow: bool = False  # even with no exemplar, the prompt exceeds the budget


class PromptBuilder:
    """Builds prompts for the items of a task from an exemplar pool."""

    def __init__(self, task: Task, items: list[dict], pool: list[dict], pool_is_items: bool, seed: int = 0) -> None:
        if not items:
            raise ValueError(f"task {task.name!r}: no items to evaluate")
        self.task, self.items, self.pool, self.pool_is_items, self.seed = task, items, pool, pool_is_items, seed
        self._by_question: dict[str, list[int]] = {}
        for j, rec in enumerate(pool):
            self._by_question.setdefault(task.question(rec), []).append(j)
        self._exemplar_text: dict[int, str] = {}

    def excluded(self, index: int) -> set[int]:
        """Pool indices that must not be exemplars for item `index`: the item itself and its duplicates."""
        out = set(self._by_question.get(self.task.question(self.items[index]), ()))
        if self.pool_is_items:
            out.add(index)
        return out

    def available(self, index: int) -> int:
        return len(self.pool) - len(self.excluded(index))

    def check_shots(self, k: int, index: int = 0) -> None:
        if k < 0:
            raise ValueError(f"shot counts must be >= 0, got {k}")
        n = self.available(index)
        if k > n:
            raise ValueError(f"task {self.task.name!r}: {k}-shot prompts need {k} exemplars but the pool has only "
                             f"{n} example(s) other than the item; lower --shots or give a larger pool")

    def draw(self, index: int, k: int) -> list[int]:
        """k distinct pool indices for item `index`, never the item; the first j of them are the j-shot draw."""
        if k == 0:
            return []
        self.check_shots(k, index)
        excluded = self.excluded(index)
        rng = random.Random(self.seed * 1_000_003 + index)
        n = len(self.pool)
        if n <= SMALL_POOL:  # a seeded shuffle; its prefixes are the smaller draws
            order = [j for j in range(n) if j not in excluded]
            rng.shuffle(order)
            return order[:k]
        out: list[int] = []
        seen = set(excluded)
        while len(out) < k:  # large pool: rejection sampling, O(k) (the branch depends on n only: nested)
            j = rng.randrange(n)
            if j not in seen:
                seen.add(j)
                out.append(j)
        return out

    def render(self, item: dict, exemplars: list[int]) -> str:
        t = self.task
        parts = [t.instruction] if t.instruction else []
        for j in exemplars:
            if j not in self._exemplar_text:
                self._exemplar_text[j] = t.exemplar(self.pool[j])
            parts.append(self._exemplar_text[j])
        parts.append(t.question(item))
        return t.separator.join(parts)

    def build(self, index: int, k: int, count_tokens: Callable[[str], int] | None = None,
              budget: int | None = None) -> Prompt:
        """The k-shot prompt for item `index`, fitted to `budget` tokens as counted by `count_tokens`."""
        drawn = self.draw(index, k)
        item = self.items[index]
        used = list(drawn)
        text = self.render(item, used)
        if count_tokens is None:
            return Prompt(text, k, len(used), used)
        n = count_tokens(text)
        while budget is not None and n > budget and used:
            used.pop()  # drop the last drawn exemplar; the question always stays
            text = self.render(item, used)
            n = count_tokens(text)
        return Prompt(text, k, len(used), used, n, overflow=budget is not None and n > budget)
