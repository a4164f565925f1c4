"""The on-disk format of prepared data: flat token shards and the meta.json that lists them.

    DATA/meta.json               format_version, vocab_size, dtype, tokenizer roles, splits -> shards
    DATA/{train,val}_NNN.bin     raw little-endian uint16 (vocab <= 65535) or uint32 token ids
    DATA/<name>/                 one source of a --mix mixture, in the same format (see `mixture`)

`prepare` writes it (`ShardWriter`, `write_meta`), `loader` reads it (`load_meta`, `open_shard`).
Damage is found when the data is opened, not as a crash mid-training: a missing or non-JSON
meta.json, a missing shard or one whose length differs from what meta.json says each raise a
`ValueError` that names the file and the command that remakes it. So does a tokenizer that is not
the one the shards were made with (`check_tokenizer`): meta.json records the sha256 of the
tokenizer.json prepare wrote, and its vocabulary size; metas written before the sha256 was
recorded are checked on vocabulary size alone. numpy only (no torch).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from llmcycle import rundir
from llmcycle.atomic import atomic_write_text, fsync_dir

FORMAT_VERSION = 1


def reprepare_hint(data_dir: Path) -> str:
    """The command that remakes the prepared data in `data_dir` (RUN/data or a mixture source in it)."""
    data_dir = Path(data_dir)
    for run in (data_dir.parent, data_dir.parent.parent):
        if data_dir.is_relative_to(rundir.data_dir(run)) and rundir.is_run(run):
            return f"re-prepare it with `llmcycle prepare --run {run} --overwrite`"
    return f"re-prepare it: run `llmcycle prepare` again with {data_dir} as its output"


def load_meta(data_dir: Path) -> dict:
    """The meta.json of a prepared data folder; its presence means prepare finished."""
    path = rundir.meta_path(data_dir)
    if not path.is_file():
        run = Path(data_dir).parent if Path(data_dir).name == rundir.DATA else "RUN"
        raise ValueError(
            f"no {rundir.META} in {data_dir}: the data is not prepared (or prepare was interrupted); "
            f"run `llmcycle prepare --run {run}` first"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): the prepared data is damaged; {reprepare_hint(data_dir)}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("splits"), dict) or "dtype" not in meta:
        raise ValueError(f"{path} lacks the 'splits' and 'dtype' of a prepared data folder; {reprepare_hint(data_dir)}")
    if meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version")
        raise ValueError(f"{path} has format_version {version}, expected {FORMAT_VERSION}; {reprepare_hint(data_dir)}")
    return meta


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def check_tokenizer(data_dir: Path, tokenizer_file: Path, vocab_size: int | None = None) -> None:
    """Refuse `tokenizer_file` (of `vocab_size` tokens, when known) if it is not the tokenizer the
    shards of `data_dir` were made with: their ids would mean other text. A folder without a readable
    meta.json (an imported model's) is not checked here; `load_meta` reports a damaged one."""
    meta_file = rundir.meta_path(data_dir)
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        recorded = meta.get("tokenizer", {}).get("sha256")
        data_vocab = meta.get("vocab_size")
    except (OSError, ValueError, AttributeError):
        return
    tokenizer_file = Path(tokenizer_file)
    differences = []
    if vocab_size is not None and isinstance(data_vocab, int) and vocab_size != data_vocab:
        differences.append(f"it has {vocab_size} tokens, the data {data_vocab}")
    if recorded and tokenizer_file.is_file() and (actual := file_sha256(tokenizer_file)) != recorded:
        differences.append(f"its sha256 is {actual[:12]}..., {meta_file} records {recorded[:12]}...")
    if differences:
        raise ValueError(f"{tokenizer_file} is not the tokenizer the shards in {data_dir} were made with "
                         f"({'; '.join(differences)}); put back the tokenizer.json prepare wrote there, or "
                         f"{reprepare_hint(data_dir)}")


def write_meta(data_dir: Path, meta: dict) -> None:
    """Write meta.json last: it is what marks `data_dir` complete."""
    atomic_write_text(rundir.meta_path(data_dir), json.dumps(meta, indent=2) + "\n")


def open_shard(data_dir: Path, file: str, tokens: int, dtype: np.dtype) -> np.ndarray:
    """Memory-map one shard listed in meta.json as `tokens` ids of `dtype`, after checking its length."""
    path = Path(data_dir) / file
    meta = rundir.meta_path(data_dir)
    if not path.is_file():
        raise ValueError(f"{path} is missing ({meta} lists it with {tokens} tokens); {reprepare_hint(data_dir)}")
    size = path.stat().st_size
    if size != tokens * dtype.itemsize:
        raise ValueError(
            f"{path} holds {size} bytes ({size / dtype.itemsize:g} {dtype.name} tokens) but {meta} says {tokens} "
            f"tokens: the file was truncated or changed; {reprepare_hint(data_dir)}"
        )
    return np.memmap(path, dtype=dtype, mode="r", shape=(tokens,))


class ShardWriter:
    """Appends token arrays to `<split>_NNN.bin` files of at most `shard_tokens` tokens each."""

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.out_dir, self.split, self.shard_tokens = Path(out_dir), split, shard_tokens
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
