"""Data mixtures: several corpora, one tokenizer, sampled at given proportions.

Continued pretraining adapts a model to a domain while keeping general ability, by mixing the two
(BloombergGPT trained on 51% financial and 49% general text). `--mix fin=finance.jsonl:0.5 default:0.5`:

    RUN/data/<name>/      each source prepared on its own (shards + meta.json), all with one tokenizer
    RUN/data/meta.json    the mixture (names, sources, weights) and every shard, listed relative to
                          RUN/data, so a plain `TokenWindows` over it still works (unweighted)

Sampling is a pure function of the step, as for one corpus: `MixtureWindows` lays out a virtual
index of V windows in which source i owns round(w_i * V) slots, and slot j of source i is its
window j mod n_i (a small source repeats, i.e. is upsampled) or, when the source has more windows
than slots, every (n_i / slots)-th window (downsampled). `global_batch_ids` then permutes the
virtual index per epoch, so every epoch holds each source at exactly its weight and each batch holds
it at that weight in expectation. Validation is reported per source as well (`source_windows`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from llmcycle.config import DataConfig, mixture_parts
from llmcycle.data.corpus import CorpusStats, Document, iter_documents
from llmcycle.data.loader import TokenWindows
from llmcycle.data.prepare import FORMAT_VERSION, META_FILE, load_meta
from llmcycle.atomic import atomic_write_text

MAX_VIRTUAL_FACTOR = 16  # the virtual index is at most this many times the windows that exist


def part_config(cfg: DataConfig, source: str) -> DataConfig:
    return dataclasses.replace(cfg, source=source, mix=[])


def interleaved_documents(cfg: DataConfig) -> Iterator[Document]:
    """Documents of every --mix source, taken in turn (so a capped tokenizer sample sees all of them)."""
    streams = [iter_documents(part_config(cfg, source), CorpusStats()) for _, source, _ in mixture_parts(cfg.mix)]
    while streams:
        for s in list(streams):
            doc = next(s, None)
            if doc is None:
                streams.remove(s)
            else:
                yield doc


def _combined_split(name_metas: dict, split: str) -> dict:
    parts = [(n, m["splits"][split]) for n, m in name_metas.items()]
    return {
        "documents": sum(p["documents"] for _, p in parts),
        "text_bytes": sum(p["text_bytes"] for _, p in parts),
        "tokens": sum(p["tokens"] for _, p in parts),
        "shards": [{**s, "file": f"{n}/{s['file']}"} for n, p in parts for s in p["shards"]],
    }


def prepare_mixture(cfg: DataConfig, out_dir: Path, progress: bool = True, tokenizer=None) -> dict:
    """Prepare each --mix source into out_dir/<name>/ with one shared tokenizer; write the mixture meta."""
    from llmcycle.data.prepare import _make_tokenizer, _remove_previous, prepare

    out_dir = Path(out_dir)
    parts = mixture_parts(cfg.mix)
    sample_bytes = 0
    if tokenizer is None:
        tokenizer, sample_bytes = _make_tokenizer(cfg, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_previous(out_dir)  # the old meta.json first: the folder stops looking complete
    metas = {name: prepare(part_config(cfg, source), out_dir / name, progress, tokenizer=tokenizer)
             for name, source, _ in parts}
    tokenizer.save(out_dir)
    first = next(iter(metas.values()))
    meta = {
        "format_version": FORMAT_VERSION,
        "vocab_size": tokenizer.vocab_size,
        "dtype": first["dtype"],
        "tokenizer": {**first["tokenizer"], "bpe_sample_bytes": sample_bytes},
        "splits": {split: _combined_split(metas, split) for split in ("train", "val")},
        "mixture": [{"name": name, "source": source, "weight": weight, "dir": name,
                     "train_tokens": metas[name]["splits"]["train"]["tokens"],
                     "val_tokens": metas[name]["splits"]["val"]["tokens"]} for name, source, weight in parts],
        "sources": [s for m in metas.values() for s in m.get("sources", [])],
        "data_config": dataclasses.asdict(cfg),
    }
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=2) + "\n")
    return meta


class MixtureWindows:
    """The windows of one split of a mixture, weighted: same interface as `TokenWindows`."""

    def __init__(self, parts: list[tuple[str, TokenWindows, float]]) -> None:
        self.names = [n for n, _, _ in parts]
        self.parts = [w for _, w, _ in parts]
        sizes = np.array([len(w) for w in self.parts], dtype=np.int64)
        weights = np.array([p for _, _, p in parts], dtype=np.float64)
        virtual = min(max(math.ceil(n / p) for n, p in zip(sizes, weights)), MAX_VIRTUAL_FACTOR * int(sizes.sum()))
        self.slots = np.maximum(1, np.round(weights * virtual)).astype(np.int64)
        self.sizes = sizes
        self._starts = np.concatenate([[0], np.cumsum(self.slots)])
        self.seq_len = self.parts[0].seq_len

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Virtual window ids -> (source index, window id within that source)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"window ids must be in [0, {len(self)}), got {ids.min()}..{ids.max()}")
        src = np.searchsorted(self._starts, ids, side="right") - 1
        slot = ids - self._starts[src]
        n, k = self.sizes[src], self.slots[src]
        local = np.where(k >= n, slot % n, slot * n // np.maximum(k, 1))
        return src, local

    def get(self, ids: np.ndarray) -> torch.Tensor:
        src, local = self.locate(ids)
        out = torch.empty(len(src), self.seq_len + 1, dtype=torch.long)
        for i, w in enumerate(self.parts):
            rows = np.nonzero(src == i)[0]
            if rows.size:
                out[torch.from_numpy(rows)] = w.get(local[rows])
        return out


def _mixture(data_dir: Path) -> list[dict]:
    return load_meta(data_dir).get("mixture") or []


def open_windows(data_dir: Path, split: str, seq_len: int):
    """`TokenWindows` of a prepared folder, or the weighted `MixtureWindows` of a mixture."""
    mix = _mixture(data_dir)
    if not mix:
        return TokenWindows(data_dir, split, seq_len)
    return MixtureWindows([(m["name"], TokenWindows(Path(data_dir) / m["dir"], split, seq_len), m["weight"]) for m in mix])


def source_windows(data_dir: Path, split: str, seq_len: int) -> dict[str, TokenWindows]:
    """Each mixture source's own windows, by name ({} for a single corpus): per-source validation."""
    return {m["name"]: TokenWindows(Path(data_dir) / m["dir"], split, seq_len) for m in _mixture(data_dir)}
