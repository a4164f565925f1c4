"""`llmcycle prepare`: corpus -> tokenizer + flat token shards + `meta.json`.

Two streaming passes over the documents, so memory stays bounded whatever the corpus size:

1. (BPE only) train the tokenizer on the train-split documents, in corpus order, up to the first
   `BPE_SAMPLE_BYTES` of text (a capped sample; BPE statistics settle long before that).
   (char only) collect the distinct characters of every document, both splits (as nanoGPT does).
2. tokenize in batches with `encode_batch`, each document as ``[bos] + tokens + [eos]`` (without
   the markers a tokenizer lacks: the char tokenizer's documents are plain text), and append
   to ``train_000.bin``, ``train_001.bin``, ... / ``val_000.bin``, ... : raw little arrays of
   ``uint16`` (vocab <= 65535) or ``uint32``, each holding `cfg.shard_tokens` tokens except the last.
   Documents run on across shard boundaries; the stream is their plain concatenation.

The whole output folder is written beside its final place and swapped in only when complete
(`llmcycle.atomic.atomic_dir`): a failed prepare leaves the earlier prepared data as it was, or
nothing at all. ``meta.json`` is written last in it (`shards`), with the sha256 of the
tokenizer.json written beside it, so a tokenizer swapped in later is refused on load. The split is by document
(`split_of`); if no document landed in validation, the last train document is moved there
(prepare holds one train document back until the end to do so; in that case the BPE sample may
have included it). A --mix mixture prepares each source into a folder of its own (`mixture`).

`prepare_run` is the stage as the CLI and `llmcycle run` use it: prepare RUN/data, refuse to
orphan a trained run's checkpoints unless told to overwrite, and save the run's config with the
model's vocabulary fitted to the tokenizer.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from llmcycle import rundir
from llmcycle.atomic import atomic_dir
from llmcycle.config import DataConfig, RunConfig, mixture_parts
from llmcycle.data.corpus import CorpusStats, Document, iter_documents, split_of
from llmcycle.data.mixture import interleaved_documents, mixture_meta, part_config
from llmcycle.data.shards import FORMAT_VERSION, ShardWriter, file_sha256, write_meta
from llmcycle.data.tokenizer import Tokenizer, byte_tokenizer, char_tokenizer, train_bpe

BPE_SAMPLE_BYTES = 64 * 2**20  # text fed to the BPE trainer at most
BATCH_BYTES = 2**20  # text per encode_batch call (bounds the Python lists of ids)
BUILT_TOKENIZERS = ("bpe", "byte", "char")  # made by prepare from the corpus; any other --tokenizer is a path reused


@dataclass
class _Split:
    writer: ShardWriter
    documents: int = 0
    text_bytes: int = 0

    def add(self, tokens: np.ndarray, text_bytes: int) -> None:
        self.writer.write(tokens)
        self.documents += 1
        self.text_bytes += text_bytes


def prepare(cfg: DataConfig, out_dir: Path, progress: bool = True, tokenizer: Tokenizer | None = None) -> dict:
    """Build the tokenizer, token shards and meta.json in `out_dir` from `cfg`; return the meta.

    `out_dir` is replaced as a whole, and only once everything is written: on any error an earlier
    `out_dir` is left as it was, and none is created. `tokenizer`: use this one instead of making
    one from cfg.tokenizer."""
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    parts = mixture_parts(cfg.mix)  # [] for a single corpus
    for part in [part_config(cfg, source) for _, source, _ in parts] or [cfg]:
        next(iter_documents(part, CorpusStats()))  # a missing or empty source fails before the tokenizer is made
    tok, sample_bytes = (tokenizer, 0) if tokenizer is not None else _make_tokenizer(cfg, progress)
    with atomic_dir(out_dir) as tmp:
        if parts:  # several sources at given proportions, each in a folder of its own (data/mixture.py)
            metas = {name: _prepare_corpus(part_config(cfg, source), tmp / name, tok, 0, progress)
                     for name, source, _ in parts}
            meta = mixture_meta(cfg, metas, sample_bytes)
        else:
            meta = _prepare_corpus(cfg, tmp, tok, sample_bytes, progress)
        meta["tokenizer"]["sha256"] = file_sha256(tok.save(tmp))  # what the shards were made with (check_tokenizer)
        write_meta(tmp, meta)
    return meta


def prepare_run(run: Path, data: DataConfig, base: RunConfig, overwrite: bool = False,
                progress: bool = True) -> tuple[dict, RunConfig]:
    """Prepare `data` into RUN/data and save RUN/config.json: `base` with this data config and the
    model's vocab_size fitted to the tokenizer. Returns (meta, the saved RunConfig).

    A run with checkpoints was trained on its current data and tokenizer; replacing them would
    orphan the checkpoints, so this refuses unless `overwrite`, which then deletes the checkpoints
    and the metrics (only after the new data is in place: a failed prepare changes nothing)."""
    run = Path(run)
    fresh = not run.exists()
    try:
        with rundir.writer_lock(run, "prepare"):  # one writer per run directory
            return _prepare_locked(run, data, base, overwrite, progress)
    except BaseException:
        if fresh:  # leave nothing behind in a directory this call created
            with contextlib.suppress(OSError):
                run.rmdir()
        raise


def _prepare_locked(run: Path, data: DataConfig, base: RunConfig, overwrite: bool, progress: bool):
    ckpts = rundir.list_checkpoints(run)
    if ckpts and not overwrite:
        raise ValueError(
            f"{run} has {len(ckpts)} checkpoint(s) (newest {ckpts[-1].name}) trained on its current data and "
            f"tokenizer; preparing new data would orphan them. Pass --overwrite to replace the data and delete "
            f"the checkpoints and metrics, or prepare into a new --run (then `train --init-from {run}` to start "
            "from its weights)"
        )
    meta = prepare(data, rundir.data_dir(run), progress)
    if ckpts:
        rundir.discard_training(run)  # checkpoints and metrics in one step: a kill leaves them whole or gone
        print(f"--overwrite: deleted {len(ckpts)} checkpoint(s) and {rundir.METRICS} of {run}, "
              "which were trained on the data just replaced")
    vocab = meta["vocab_size"]
    if data.tokenizer not in BUILT_TOKENIZERS:  # a reused tokenizer may be smaller than the model's embedding
        vocab = max(vocab, base.model.vocab_size)
    cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, vocab_size=vocab), data=data)
    rundir.save_config(run, cfg)
    return meta, cfg


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to replace a non-empty folder that is not prepared data (it may hold the user's files)."""
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (
            rundir.meta_path(out_dir).is_file() or (out_dir / rundir.TOKENIZER).is_file()):
        raise ValueError(f"{out_dir} is not empty and holds no prepared data ({rundir.META}); refusing to "
                         "replace it: choose another output folder")


def _prepare_corpus(cfg: DataConfig, out_dir: Path, tok: Tokenizer, sample_bytes: int, progress: bool) -> dict:
    """Tokenize one corpus into shards in `out_dir` (created) and write its meta.json; return the meta."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if tok.vocab_size <= 65535 else np.uint32
    splits = {s: _Split(ShardWriter(out_dir, s, dtype, cfg.shard_tokens)) for s in ("train", "val")}
    stats = CorpusStats()
    try:
        moved = _tokenize_into(splits, iter_documents(cfg, stats), tok, cfg, progress)
        shards = {name: split.writer.close() for name, split in splits.items()}
    finally:
        for split in splits.values():
            split.writer.abort()
    if splits["train"].documents == 0:
        raise ValueError(
            f"{cfg.source} gave only {splits['val'].documents} document(s), all needed for validation; add data "
            "(a single text file is cut into ~8 KB documents at blank lines, so it must be longer than that)"
        )
    meta = _meta(cfg, tok, np.dtype(dtype).name, splits, shards, stats, sample_bytes, moved)
    write_meta(out_dir, meta)
    return meta


def _make_tokenizer(cfg: DataConfig, progress: bool) -> tuple[Tokenizer, int]:
    """The tokenizer, and how many bytes of text trained it (0 for the byte tokenizer)."""
    if cfg.tokenizer == "byte":
        return byte_tokenizer(), 0
    if cfg.tokenizer == "char":  # every character of the corpus, both splits: nothing in val is unknown
        chars: set[str] = set()
        read = 0
        for doc in _sample_documents(cfg):
            chars.update(doc.text)
            read += len(doc.text.encode("utf-8"))
        return char_tokenizer(chars), read
    if cfg.tokenizer != "bpe":  # a path: reuse that tokenizer (an imported model's, for continued pretraining)
        return _reuse_tokenizer(Path(cfg.tokenizer)), 0
    taken = 0

    def sample() -> Iterator[str]:
        nonlocal taken
        with tqdm(desc="bpe sample", unit="B", unit_scale=True, disable=not progress) as bar:
            for doc in _sample_documents(cfg):
                if split_of(doc.sha256, cfg.seed, cfg.val_fraction) != "train":
                    continue
                yield doc.text
                n = len(doc.text.encode("utf-8"))
                taken += n
                bar.update(n)
                if taken >= BPE_SAMPLE_BYTES:
                    return

    tok = train_bpe(sample(), cfg.vocab_size)
    return tok, taken


def _reuse_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer at `path`: a tokenizer.json, or a run directory holding one (at its top or in data/)."""
    for candidate in (path, path / rundir.TOKENIZER, rundir.tokenizer_path(path)):
        if candidate.is_file():
            return Tokenizer.load(candidate)
    raise ValueError(f"--tokenizer {path}: no {rundir.TOKENIZER} there (nor in {rundir.data_dir(path)}); give a "
                     f"{rundir.TOKENIZER}, "
                     "a run directory made by `llmcycle import` or `prepare`, or 'bpe' / 'byte'")


def _sample_documents(cfg: DataConfig) -> Iterator[Document]:
    """The documents the BPE tokenizer is trained on: the source's, or every --mix source's in turn."""
    if cfg.mix:
        return interleaved_documents(cfg)
    return iter_documents(cfg, CorpusStats())


def _batches(docs: Iterator[Document]) -> Iterator[list[Document]]:
    batch, size = [], 0
    for doc in docs:
        batch.append(doc)
        size += len(doc.text)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _tokenize_into(splits: dict, docs: Iterator[Document], tok: Tokenizer, cfg: DataConfig, progress: bool) -> bool:
    """Tokenize every document into its split; return True if a train document was moved to val."""
    pending = None  # the latest train document, held back in case validation ends up empty
    with tqdm(desc="tokenize", unit="B", unit_scale=True, disable=not progress) as bar:
        for batch in _batches(docs):
            encoded = tok.encode_batch([d.text for d in batch], bos=tok.bos_id is not None, eos=tok.eos_id is not None)
            for doc, ids in zip(batch, encoded):
                item = (np.asarray(ids, dtype=np.int64), len(doc.text.encode("utf-8")))
                bar.update(item[1])
                if split_of(doc.sha256, cfg.seed, cfg.val_fraction) == "val":
                    splits["val"].add(*item)
                    continue
                if pending is not None:
                    splits["train"].add(*pending)
                pending = item
    if pending is None:
        return False
    moved = splits["val"].documents == 0
    splits["val" if moved else "train"].add(*pending)
    return moved


def _meta(cfg, tok, dtype, splits, shards, stats, sample_bytes, moved) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "vocab_size": tok.vocab_size,
        "dtype": dtype,
        "tokenizer": {
            "kind": tok.kind,
            "file": rundir.TOKENIZER,
            "bpe_sample_bytes": sample_bytes,
            "bos_id": tok.bos_id,
            "eos_id": tok.eos_id,
            "pad_id": tok.pad_id,
            "mask_id": tok.mask_id,  # the roles the encoder / seq2seq objectives need
            "sentinel_ids": tok.sentinel_ids,
            "special_ids": sorted(tok.special_ids),
        },
        "splits": {
            name: {
                "documents": split.documents,
                "text_bytes": split.text_bytes,
                "tokens": sum(s["tokens"] for s in shards[name]),
                "shards": shards[name],
            }
            for name, split in splits.items()
        },
        "val_document_moved_from_train": moved,
        "corpus": asdict(stats),
        "sources": stats.sources,
        "data_config": asdict(cfg),
    }
