"""Where text comes from: a stream of documents read from a file, a folder, a JSONL file, or the
default corpus (the running interpreter's own standard-library source, found through `sysconfig`).

Nothing here holds the whole corpus in memory: `iter_documents` yields one `Document` at a time
and keeps only a set of 32-byte digests to drop exact duplicates. What a source yields:

- ``"default"``: every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]`` except third-party
  and test code (folders named ``site-packages``, ``dist-packages``, ``test``, ``tests``,
  ``idle_test``, ``__pycache__`` or ``test_*``) and generated blobs (``pydoc_data/topics.py``,
  ``_sysconfigdata_*.py``, and, as a rule, any file over 500 KB). ``cfg.exclude`` applies too.
- a folder: every file whose path relative to the folder (POSIX form, case-sensitive) matches one
  of ``cfg.include`` and none of ``cfg.exclude`` (``fnmatch`` globs, where ``*`` also crosses
  ``/``, so ``*.py`` matches at any depth and ``*tests/*`` skips every ``tests`` folder), in
  sorted order. One document per file; each file is read whole.
- a ``.jsonl`` file: one document per non-blank line, the string in field ``cfg.text_field``.
- any other file: streamed and cut into documents at blank lines: a chunk closes at the first
  blank line once it holds at least 8 KB, or at any line end once it holds 64 KB, so a held-out
  split by document exists even for one long text. The chunks concatenate back to the file.

Exact duplicates (same sha256 of the text) are dropped and counted. With ``cfg.max_bytes`` the
stream stops once that many UTF-8 bytes of documents have been yielded (the last one whole).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import sysconfig
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator

from llmcycle.config import DataConfig

MAX_DEFAULT_FILE_BYTES = 500_000  # larger stdlib files are generated tables, not code
CHUNK_MIN_BYTES = 8 * 1024  # a single text file is cut at the first blank line after this
CHUNK_MAX_BYTES = 64 * 1024  # ... or at any line end after this
SKIPPED_NAMES_KEPT = 10
_DEFAULT_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_DEFAULT_SKIP_FILES = ("pydoc_data/topics.py", "*_sysconfigdata_*.py")


def default_corpus_root() -> Path:
    """The standard-library folder of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def text_hash(text: str) -> str:
    """Hex sha256 of the UTF-8 text: the identity used for de-duplication and the split."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Document:
    """One unit of text; the train/validation split never cuts through a document."""

    name: str
    text: str

    @cached_property
    def sha256(self) -> str:
        return text_hash(self.text)


@dataclass
class CorpusStats:
    """What reading the corpus found; filled in while `iter_documents` runs."""

    files_read: int = 0
    bytes_read: int = 0  # raw bytes of the files read (before de-duplication)
    skipped_undecodable: int = 0
    skipped_names: list[str] = field(default_factory=list)  # the first few undecodable files
    duplicates_removed: int = 0
    sources: list[str] = field(default_factory=list)


def split_of(doc_text_hash: str, seed: int, val_fraction: float) -> str:
    """'val' or 'train' for a document, from a seeded hash of its text hash.

    A pure function of its arguments, so the split is deterministic, streaming-friendly (no need
    to see the whole corpus) and independent of document order. About `val_fraction` of the
    documents land in 'val'; `prepare` moves one document there if none did.
    """
    digest = hashlib.sha256(f"{seed}:{doc_text_hash}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    return "val" if u < val_fraction else "train"


def iter_documents(cfg: DataConfig, stats: CorpusStats) -> Iterator[Document]:
    """Stream the de-duplicated documents of `cfg.source`, updating `stats` as it goes."""
    raw, where = _raw_documents(cfg, stats)
    seen: set[bytes] = set()
    yielded = text_bytes = 0
    for doc in raw:
        if cfg.max_bytes is not None and text_bytes >= cfg.max_bytes:
            break
        digest = bytes.fromhex(doc.sha256)
        if digest in seen:
            stats.duplicates_removed += 1
            continue
        seen.add(digest)
        yielded += 1
        text_bytes += len(doc.text.encode("utf-8"))
        yield doc
    if yielded == 0:
        raise ValueError(
            f"no documents found in {where} with include={cfg.include} exclude={cfg.exclude}; "
            "check the path and the globs (--include/--exclude), or that the files are not empty"
        )


def _raw_documents(cfg: DataConfig, stats: CorpusStats) -> tuple[Iterator[Document], str]:
    """The documents of the source before de-duplication, and a description of where they are."""
    if cfg.source == "default":
        root = default_corpus_root()
        stats.sources.append(f"python-stdlib:{root}")
        return _folder_documents(root, ["*.py"], cfg.exclude, cfg.strict, stats, default=True), str(root)
    path = Path(cfg.source).expanduser()
    if not path.exists():
        raise ValueError(f"corpus source {path} does not exist; give a file, a folder, a .jsonl file or 'default'")
    stats.sources.append(str(path.resolve()))
    if path.is_dir():
        return _folder_documents(path, cfg.include, cfg.exclude, cfg.strict, stats), str(path)
    if path.suffix == ".jsonl":
        return _jsonl_documents(path, cfg.text_field, stats), str(path)
    return _text_file_chunks(path, stats), str(path)


# ---------------------------------------------------------------- folders


def _folder_documents(
    root: Path, include: list[str], exclude: list[str], strict: bool, stats: CorpusStats, default: bool = False
) -> Iterator[Document]:
    for rel in _folder_files(root, include, exclude, default):
        path = root / rel
        if default and path.stat().st_size > MAX_DEFAULT_FILE_BYTES:
            continue
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            if strict:
                raise ValueError(
                    f"{path} is not valid UTF-8 (byte {e.start}); convert it to UTF-8, exclude it "
                    "with --exclude, or drop --strict to skip such files"
                ) from e
            stats.skipped_undecodable += 1
            if len(stats.skipped_names) < SKIPPED_NAMES_KEPT:
                stats.skipped_names.append(str(path))
            continue
        stats.files_read += 1
        stats.bytes_read += len(data)
        if text:
            yield Document(rel, text)


def _folder_files(root: Path, include: list[str], exclude: list[str], default: bool) -> list[str]:
    """Relative POSIX paths of the files to read, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if default:
            dirnames[:] = [d for d in dirnames if d not in _DEFAULT_SKIP_DIRS and not d.startswith("test_")]
        base = Path(dirpath).relative_to(root)
        for name in filenames:
            rel = (base / name).as_posix()
            if not _matches(rel, include) or _matches(rel, exclude):
                continue
            if default and _matches(rel, list(_DEFAULT_SKIP_FILES)):
                continue
            found.append(rel)
    return sorted(found)


def _matches(rel: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, g) for g in globs)


# ---------------------------------------------------------------- JSONL


def _jsonl_documents(path: Path, text_field: str, stats: CorpusStats) -> Iterator[Document]:
    """One document per line; JSON Lines is UTF-8 by definition, so bad bytes are an error."""
    stats.files_read += 1
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            stats.bytes_read += len(raw)
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{path} line {lineno} is not a UTF-8 JSON object: {e}") from e
            if not isinstance(record, dict) or text_field not in record:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise ValueError(
                    f"{path} line {lineno} has no field {text_field!r} (available: {keys}); "
                    "name the text field with --text-field"
                )
            text = record[text_field]
            if not isinstance(text, str):
                raise ValueError(f"{path} line {lineno}: field {text_field!r} holds {type(text).__name__}, not text")
            if text:
                yield Document(f"{path.name}:{lineno}", text)


# ---------------------------------------------------------------- one text file


def _text_file_chunks(path: Path, stats: CorpusStats) -> Iterator[Document]:
    """Stream one text file as blank-line-aligned chunks of about 8-64 KB (see the module doc).

    A single file is the whole corpus, so bytes that are not UTF-8 raise whatever `strict` says:
    skipping the file would leave nothing to train on.
    """
    stats.files_read += 1
    lines: list[str] = []
    size = index = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            stats.bytes_read += len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path} line {lineno} is not valid UTF-8 (byte {e.start} of the line); convert the file "
                    "to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
                ) from e
            lines.append(line)
            size += len(raw)
            if (size >= CHUNK_MIN_BYTES and not line.strip()) or size >= CHUNK_MAX_BYTES:
                yield Document(f"{path.name}#{index}", "".join(lines))
                lines, size, index = [], 0, index + 1
    if lines:
        yield Document(f"{path.name}#{index}", "".join(lines))
