"""Data mixtures: several corpora, one tokenizer, sampled at given proportions.

Continued pretraining adapts a model to a domain while keeping general ability, by mixing the two
(BloombergGPT trained on 51% financial and 49% general text). `--mix fin=finance.jsonl:0.5 default:0.5`:

    RUN/data/<name>/      each source prepared on its own (shards + meta.json), all with one tokenizer
    RUN/data/meta.json    the mixture (names, sources, weights) and every shard, listed relative to
                          RUN/data, so a plain `TokenWindows` over it still works (unweighted)

This module says what a mixture is made of (`part_config`, `interleaved_documents` for the
tokenizer's sample) and writes its combined meta (`mixture_meta`); `prepare` prepares the parts
and `loader.MixtureWindows` samples them at their weights.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

from llmcycle.config import DataConfig, mixture_parts
from llmcycle.data.corpus import CorpusStats, Document, iter_documents
from llmcycle.data.shards import FORMAT_VERSION


def part_config(cfg: DataConfig, source: str) -> DataConfig:
    """The DataConfig of one --mix source: `cfg` with that source and no mixture."""
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


def mixture_meta(cfg: DataConfig, metas: dict[str, dict], sample_bytes: int) -> dict:
    """The meta.json of a mixture from the metas of its parts ({name: meta}, in --mix order), which
    were prepared into folders named after them; `sample_bytes`: text the shared tokenizer trained on."""
    parts = mixture_parts(cfg.mix)
    first = metas[parts[0][0]]
    return {
        "format_version": FORMAT_VERSION,
        "vocab_size": first["vocab_size"],
        "dtype": first["dtype"],
        "tokenizer": {**first["tokenizer"], "bpe_sample_bytes": sample_bytes},
        "splits": {split: _combined_split(metas, split) for split in ("train", "val")},
        "mixture": [{"name": name, "source": source, "weight": weight, "dir": name,
                     "train_tokens": metas[name]["splits"]["train"]["tokens"],
                     "val_tokens": metas[name]["splits"]["val"]["tokens"]} for name, source, weight in parts],
        "sources": [s for m in metas.values() for s in m.get("sources", [])],
        "data_config": dataclasses.asdict(cfg),
    }
