"""Atomic writes: a file or a whole directory appears complete or not at all.

    atomic_write_text(path, text)       temp file beside `path` -> fsync -> rename over it
    with atomic_dir(final) as tmp:      fill `tmp`; on success: fsync tree -> rename -> fsync parent
    begin_dir(final) / commit_dir(tmp, final) / abort_dir(tmp)   the same steps, for writers that
                                         coordinate several processes between them (sharded checkpoints)

One protocol for everything that must survive a crash: checkpoints (single-process and sharded),
imported models and prepared data. A crash at any point leaves either no `final` or a whole one;
the previous `final`, if any, is replaced only by the last rename. Temporary names start with a dot
and end in `.tmp`, so `stale_temporaries` can find what a killed process left. Torch-free.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

TMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync it, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def temp_dir_for(final: Path) -> Path:
    final = Path(final)
    return final.with_name(f".{final.name}{TMP_SUFFIX}")


def begin_dir(final: Path) -> Path:
    """A fresh, empty temporary directory beside `final` (a leftover one is removed first)."""
    tmp = temp_dir_for(final)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _fsync_tree(path: Path) -> None:
    for d, _, files in os.walk(path):
        for f in files:
            with open(Path(d) / f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(d))


def commit_dir(tmp: Path, final: Path) -> Path:
    """Make `tmp` durable and rename it to `final`, replacing an existing `final` only at the end."""
    tmp, final = Path(tmp), Path(final)
    _fsync_tree(tmp)
    old = None
    if final.exists():  # e.g. re-saving a step, or an import with --overwrite
        old = final.with_name(f".{final.name}.old{TMP_SUFFIX}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def abort_dir(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: Path):
    """`with atomic_dir(final) as tmp:` write into `tmp`; it becomes `final` only if the block succeeds."""
    tmp = begin_dir(final)
    try:
        yield tmp
    except BaseException:
        abort_dir(tmp)
        raise
    commit_dir(tmp, final)


def stale_temporaries(parent: Path, prefix: str = ".") -> list[Path]:
    """Temporary directories a killed writer left in `parent` (names `.X.tmp`)."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(TMP_SUFFIX))
