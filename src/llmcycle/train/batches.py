"""What the training loop trains on: a source of model-input batches, pure in (seed, step, rank).

    class Batches:                          the interface the loop calls
        tokens_per_step                     training tokens per optimizer step (all ranks)
        bytes_per_token                     text bytes per token, for bits per byte (None: not meaningful)
        micro_batches(step, rank, world, micro, accum) -> accum model-kwargs dicts (an iterable)
        validation() -> {name: [model kwargs, ...]}  fixed batches, the same at every evaluation

    PretrainBatches(run, cfg)               token windows of RUN/data under the family's objective

A batch is the keyword arguments of the model's forward (`idx`, `targets`, masks...), so another
stage can train through the same loop by supplying another `Batches` (fine-tuning's examples with
masked prompt tokens). Because every batch is a pure function of (seed, step, rank), resuming
needs no data-loader state and stays bit-exact.
"""

from __future__ import annotations

import torch

from llmcycle.config import RunConfig
from llmcycle.data.loader import eval_ids, global_batch_ids, open_windows, rank_share, source_windows
from llmcycle.data.objectives import objective_for, raw_length
from llmcycle.data.shards import load_meta
from llmcycle.rundir import data_dir


class Batches:
    """The interface; see the module docstring."""

    tokens_per_step: int
    bytes_per_token: float | None

    def micro_batches(self, step: int, rank: int, world_size: int, micro: int, accum: int) -> list[dict]:
        raise NotImplementedError

    def validation(self, rank: int, world_size: int) -> dict[str, list[dict]]:
        raise NotImplementedError


class PretrainBatches(Batches):
    """Windows of the prepared token shards (a `--mix` mixture: weighted over its sources), turned
    into the family's objective: next token, masked tokens or corrupted spans."""

    def __init__(self, run, cfg: RunConfig) -> None:
        t, data = cfg.train, data_dir(run)
        meta = load_meta(data)
        if meta["vocab_size"] > cfg.model.vocab_size:
            raise ValueError(f"the tokenizer has {meta['vocab_size']} tokens but the model only "
                             f"{cfg.model.vocab_size}; set --vocab-size >= {meta['vocab_size']}")
        self.seed, self.batch_size, self.eval_batches = t.seed, t.batch_size, t.eval_batches
        self.objective = objective_for(cfg.model.family, {**meta["tokenizer"], "vocab_size": meta["vocab_size"]},
                                       cfg.model)
        window = raw_length(self.objective, t.seq_len) - 1  # TokenWindows(.., n) cuts n + 1 tokens
        self.train = open_windows(data, "train", window)
        self.val = {"": open_windows(data, "val", window), **source_windows(data, "val", window)}
        self.tokens_per_step = t.batch_size * t.seq_len
        val_split = meta["splits"]["val"]
        self.bytes_per_token = val_split["text_bytes"] / val_split["tokens"]

    def micro_batches(self, step, rank, world_size, micro, accum):
        ids = rank_share(global_batch_ids(step, self.batch_size, len(self.train), self.seed), rank, world_size)
        generator = torch.Generator().manual_seed(hash((self.seed, step, rank)) % 2**63)  # objective randomness
        for i in range(accum):  # one micro-batch in memory at a time
            yield self.objective(self.train.get(ids[i * micro:(i + 1) * micro]), generator)

    def validation(self, rank, world_size) -> dict[str, list[dict]]:
        out = {}
        for name, w in self.val.items():
            generator = torch.Generator().manual_seed(self.seed)  # each set's corruption fixed by the seed
            batches = eval_ids(len(w), self.eval_batches, min(self.batch_size, len(w)), self.seed)
            out[name] = [self.objective(w.get(rank_share(ids, rank, world_size) if len(ids) % world_size == 0
                                              else ids), generator) for ids in batches]
        return out
