"""Where a task's records come from (`Source`) and how they are read.

Local files (JSONL, JSON, CSV, TSV, or "label-text" lines `<label> <text>`), with relative paths
resolved against a data folder (`--data-dir`, $LLMCYCLE_DATA, or the `shared/data` folder beside or
above the working directory), or the Hugging Face hub by name (`"hub": "knkarthick/dialogsum"`)
through the optional `datasets` package when online. Renames and literal replacements are applied
on load.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("jsonl", "json", "csv", "tsv", "label-text")


@dataclass
class Source:
    """Where records come from: a local file, or a hub dataset (used when the file is absent)."""

    path: str | None = None  # local file; relative paths resolve against the data folder
    format: str | None = None  # jsonl | json | csv | tsv | label-text (default: from the suffix)
    hub: str | None = None  # Hugging Face dataset name, loaded with `datasets` when the file is absent
    hub_config: str | None = None  # the dataset's configuration name, if it has several
    split: str = "test"  # hub split
    rename: dict[str, str] = field(default_factory=dict)  # field renames {old: new}, applied on load
    replace: dict[str, str] = field(default_factory=dict)  # literal text replacements in string fields

    def __post_init__(self) -> None:
        if self.path is None and self.hub is None:
            raise ValueError("a data source needs a local 'path' or a 'hub' dataset name")
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"format {self.format!r} is not supported; choose one of {', '.join(FORMATS)}")

    def describe(self) -> str:
        return self.path or f"hub:{self.hub}[{self.split}]"


def default_data_dir() -> Path:
    """$LLMCYCLE_DATA, else the first `shared/data` found beside or above the working directory."""
    env = os.environ.get("LLMCYCLE_DATA")
    if env:
        return Path(env)
    cwd = Path.cwd()
    for base in (cwd, *cwd.parents):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    return cwd


def resolve_data_dir(data_dir, task_root) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    if task_root is not None:
        return Path(task_root)
    return default_data_dir()


def _clean(record: dict, src: Source) -> dict:
    out = {src.rename.get(k, k): v for k, v in record.items()}
    if src.replace:
        for k, v in out.items():
            if isinstance(v, str):
                for old, new in src.replace.items():
                    v = v.replace(old, new)
                out[k] = v
    return out


def _read_file(path: Path, fmt: str) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if fmt == "jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e})") from None
        return rows
    if fmt == "json":
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise ValueError(f"{path}: a .json data file must hold a list of records")
        return rows
    if fmt in ("csv", "tsv"):
        return list(csv.DictReader(text.splitlines(), delimiter="," if fmt == "csv" else "\t"))
    # label-text: "<label> <text>" per line (SST-2 as distributed by Kim 2014 / Zhao et al. 2021)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            label, sep, rest = line.partition(" ")
            if not sep:
                raise ValueError(f"{path}:{n}: expected '<label> <text>', got {line[:60]!r}")
            rows.append({"label": label, "text": rest})
    return rows


def _format_of(src: Source, path: Path) -> str:
    if src.format:
        return src.format
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "json", "csv", "tsv"):
        return suffix
    raise ValueError(f"cannot tell the format of {path} from its name; set \"format\" to one of {', '.join(FORMATS)}")


def _load_hub(src: Source) -> list[dict]:
    try:
        import datasets  # optional: only for hub names
    except ImportError:
        raise ValueError(f"loading {src.hub!r} from the Hugging Face hub needs the `datasets` package "
                         "(pip install datasets), or give a local file as the source's 'path'") from None
    try:
        ds = datasets.load_dataset(src.hub, src.hub_config, split=src.split)
    except Exception as e:  # offline, unknown name, unknown split: say which
        raise ValueError(f"could not load {src.hub!r} split {src.split!r} from the hub: {e}") from None
    return [dict(r) for r in ds]


def load_records(src: Source, root: Path) -> list[dict]:
    """Records of a source, with renames and replacements applied."""
    if src.path is not None:
        path = Path(src.path)
        path = path if path.is_absolute() else Path(root) / path
        if path.is_file():
            rows = _read_file(path, _format_of(src, path))
        elif src.hub is None:
            raise ValueError(f"data file {path} not found; pass --data-dir (or set LLMCYCLE_DATA) to the folder "
                             f"holding {src.path}")
        else:
            rows = _load_hub(src)
    else:
        rows = _load_hub(src)
    return [_clean(r, src) for r in rows]
