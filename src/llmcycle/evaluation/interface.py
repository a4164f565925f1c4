"""The one interface over every model the evaluation can score, and the answer-cutting rules.

    count_tokens(text) -> int                  prompt length as the model will see it
    prompt_budget(max_new_tokens) -> int       tokens a prompt may keep so that the answer fits
    generate(prompts, max_new_tokens, sampling, stop, seed) -> completions (batched, left-padded)
    loglikelihood([(context, continuation)]) -> [(sum log p(continuation | context), n tokens, greedy?)]

Implementations: `llmcycle_adapters.py` (llmcycle decoder / seq2seq / encoder runs) and
`hf_adapters.py` (Hugging Face causal / seq2seq models); `adapters.load_adapter` picks one.
Torch-free: `icl.py` needs only this interface.
"""

from __future__ import annotations

from typing import Callable

from llmcycle.inference.config import SamplingConfig
from llmcycle.inference.stops import cut_at_ids, cut_at_stop, has_stop


def stop_hit(text: str, stop: list[str]) -> bool:
    """Whether a stop string occurs after the completion's leading whitespace (a model that starts
    its answer with a newline has not finished when the task stops at newlines)."""
    return has_stop(text.lstrip(), stop)


def cut_completion(ids: list[int], decode: Callable[[list[int]], str], stop_ids: set[int],
                   stop: list[str]) -> tuple[str, int]:
    """(text, new tokens kept): the ids up to the first stop id, decoded, leading whitespace
    removed, cut before the first stop string."""
    ids, _ = cut_at_ids(ids, stop_ids)
    text, _ = cut_at_stop(decode(ids).lstrip(), stop)
    return text, len(ids)


def prompt_room(max_seq_len: int | None, max_new_tokens: int) -> int | None:
    """Tokens a prompt may keep so that the answer fits (at least half the context stays for the prompt)."""
    if max_seq_len is None:
        return None
    return max(max_seq_len - max_new_tokens, max_seq_len // 2)


class Adapter:
    """Interface; see the module docstring."""

    kind = "?"
    can_generate = True
    max_seq_len: int | None = None  # tokens the model can attend to (None: no known limit)

    def describe(self) -> str:
        return self.kind

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    def prompt_budget(self, max_new_tokens: int) -> int | None:
        return prompt_room(self.max_seq_len, max_new_tokens)

    def generate(self, prompts: list[str], max_new_tokens: int, sampling: SamplingConfig, stop: list[str],
                 seed: int | None = None) -> list[str]:
        raise NotImplementedError

    def loglikelihood(self, pairs: list[tuple[str, str]]) -> list[tuple[float, int, bool]]:
        raise NotImplementedError
