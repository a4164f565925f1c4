"""`llmcycle prepare`: corpus -> tokenizer + flat token shards + `meta.json`.

Two streaming passes over the documents, so memory stays bounded whatever the corpus size:

1. (BPE only) train the tokenizer on the train-split documents, in corpus order, up to the first
   `BPE_SAMPLE_BYTES` of text (a capped sample; BPE statistics settle long before that).
2. tokenize in batches with `encode_batch`, each document as ``[bos] + tokens + [eos]``, and append
   to ``train_000.bin``, ``train_001.bin``, ... / ``val_000.bin``, ... : raw little arrays of
   ``uint16`` (vocab <= 65535) or ``uint32``, each holding `cfg.shard_tokens` tokens except the last.
   Documents run on across shard boundaries; the stream is their plain concatenation.

Every shard is written to a temporary file, fsynced and renamed, so a killed prepare never leaves a
shard that looks complete; ``meta.json`` is written last and is what marks the folder complete
(`load_meta`). The split is by document (`split_of`); if no document landed in validation, the
last train document is moved there (prepare holds one train document back until the end to do so;
in that case the BPE sample may have included it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from llmcycle.config import DataConfig
from llmcycle.data.corpus import CorpusStats, Document, iter_documents, split_of
from llmcycle.data.tokenizer import Tokenizer, byte_tokenizer, train_bpe
from llmcycle.atomic import atomic_write_text, fsync_dir

BPE_SAMPLE_BYTES = 64 * 2**20  # text fed to the BPE trainer at most
BATCH_BYTES = 2**20  # text per encode_batch call (bounds the Python lists of ids)
META_FILE = "meta.json"
FORMAT_VERSION = 1
_SHARD_RE = re.compile(r"^\.?(train|val)_\d+\.bin(\..*\.tmp)?$")


class ShardWriter:
    """Appends token arrays to `<split>_NNN.bin` files of at most `shard_tokens` tokens each."""

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.dtype = np.dtype(dtype).newbyteorder("<")  # files are little-endian on every machine
        self.shards: list[dict] = []
        self._file = self._tmp = self._hash = None
        self._count = 0

    def write(self, tokens: np.ndarray) -> None:
        assert len(tokens) == 0 or 0 <= np.min(tokens) and np.max(tokens) <= np.iinfo(self.dtype).max
        tokens = np.asarray(tokens).astype(self.dtype, copy=False)
        while len(tokens):
            if self._file is None:
                self._open()
            room = self.shard_tokens - self._count
            chunk, tokens = tokens[:room], tokens[room:]
            data = chunk.tobytes()
            self._file.write(data)
            self._hash.update(data)
            self._count += len(chunk)
            if self._count == self.shard_tokens:
                self._finish()

    def close(self) -> list[dict]:
        """Finish the last (partial) shard and return [{file, tokens, sha256}, ...]."""
        if self._file is not None:
            self._finish()
        return self.shards

    def abort(self) -> None:
        """Drop the shard in progress (the finished ones stay; meta.json is never written)."""
        if self._file is not None:
            self._file.close()
            os.unlink(self._tmp)
            self._file = None

    @property
    def _name(self) -> str:
        return f"{self.split}_{len(self.shards):03d}.bin"

    def _open(self) -> None:
        fd, self._tmp = tempfile.mkstemp(dir=self.out_dir, prefix=f".{self._name}.", suffix=".tmp")
        self._file, self._hash, self._count = os.fdopen(fd, "wb"), hashlib.sha256(), 0

    def _finish(self) -> None:
        name = self._name
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.out_dir / name)
        fsync_dir(self.out_dir)
        self.shards.append({"file": name, "tokens": self._count, "sha256": self._hash.hexdigest()})
        self._file = None


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
    """Build tokenizer.json, token shards and meta.json in `out_dir` from `cfg`; return the meta.
    `tokenizer`: use this one instead of making one from cfg.tokenizer (the parts of a mixture share one)."""
    if cfg.mix:  # several sources at given proportions: data/mixture.py
        from llmcycle.data.mixture import prepare_mixture

        return prepare_mixture(cfg, out_dir, progress, tokenizer)
    out_dir = Path(out_dir)
    next(iter_documents(cfg, CorpusStats()))  # a missing or empty source fails before anything is touched
    tok, sample_bytes = (tokenizer, 0) if tokenizer is not None else _make_tokenizer(cfg, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_previous(out_dir)
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
    tok.save(out_dir)
    meta = _meta(cfg, tok, np.dtype(dtype).name, splits, shards, stats, sample_bytes, moved)
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=2) + "\n")
    return meta


def load_meta(data_dir: Path) -> dict:
    """The meta.json of a prepared data folder; its presence means prepare finished."""
    path = Path(data_dir) / META_FILE
    if not path.is_file():
        raise ValueError(
            f"no {META_FILE} in {data_dir}: the data is not prepared (or prepare was interrupted); "
            f"run `llmcycle prepare` with this folder as output first"
        )
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version")
        raise ValueError(f"{path} has format_version {version}, expected {FORMAT_VERSION}; re-run `llmcycle prepare`")
    return meta


def _remove_previous(out_dir: Path) -> None:
    """Delete an earlier prepare's meta.json (first, so the folder stops looking complete) and shards."""
    (out_dir / META_FILE).unlink(missing_ok=True)
    for path in out_dir.iterdir():
        if _SHARD_RE.match(path.name) and path.is_file():
            path.unlink()


def _make_tokenizer(cfg: DataConfig, progress: bool) -> tuple[Tokenizer, int]:
    """The tokenizer, and how many bytes of text trained it (0 for the byte tokenizer)."""
    if cfg.tokenizer == "byte":
        return byte_tokenizer(), 0
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
    for candidate in (path, path / "tokenizer.json", path / "data" / "tokenizer.json"):
        if candidate.is_file():
            return Tokenizer.load(candidate)
    raise ValueError(f"--tokenizer {path}: no tokenizer.json there (nor in {path / 'data'}); give a tokenizer.json, "
                     "a run directory made by `llmcycle import` or `prepare`, or 'bpe' / 'byte'")


def _sample_documents(cfg: DataConfig) -> Iterator[Document]:
    """The documents the BPE tokenizer is trained on: the source's, or every --mix source's in turn."""
    if cfg.mix:
        from llmcycle.data.mixture import interleaved_documents

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
            encoded = tok.encode_batch([d.text for d in batch], bos=True, eos=True)
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
            "file": "tokenizer.json",
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
