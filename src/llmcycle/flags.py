"""Command-line flags generated from the typed config dataclasses, so the two never drift.

    add_dataclass_flags(parser, TrainConfig, "training")   one --kebab-case flag per field
    given(args, TrainConfig)                                the fields given on the command line
    merged(base, TrainConfig, args)                         `base` with those applied (and validated)

A flag's help is the comment written after its field in the dataclass (read with `ast`, not by
regular expression) followed by the default; its type comes from `typing.get_type_hints`. Defaults
are `argparse.SUPPRESS`, so only flags the user typed reach the namespace: a run directory's saved
config is overridden by what was given and nothing else. Torch-free (`--help` must stay fast).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import lru_cache


@lru_cache(maxsize=None)
def field_comments(cls) -> dict[str, str]:
    """{field name: the `# comment` on its line} for a dataclass defined in a source file."""
    src = textwrap.dedent(inspect.getsource(cls))
    lines = src.splitlines()
    out = {}
    for node in ast.parse(src).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line = lines[node.end_lineno - 1]
            if "#" in line[node.end_col_offset:]:
                out[node.target.id] = line[node.end_col_offset:].split("#", 1)[1].strip()
    return out


def _flag_type(tp):
    """(argparse type, nargs, is_bool) for a resolved annotation such as `int | None`; type None: not a flag."""
    union = isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union
    args = [a for a in typing.get_args(tp) if a is not type(None)] if union else [tp]
    base = args[0]
    if base is bool:
        return None, None, True
    if typing.get_origin(base) is list:
        return typing.get_args(base)[0], "*", False
    if base is dict or typing.get_origin(base) is dict:
        return None, None, False  # dict-valued fields are set in config.json, not on the command line
    return base, None, False


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, title: str, skip: tuple = ()) -> None:
    """One --kebab-case flag per field of `cls`, in an argument group named `title`."""
    group = parser.add_argument_group(title)
    comments, hints = field_comments(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        typ, nargs, is_bool = _flag_type(hints[f.name])
        if typ is None and not is_bool:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f"{comments.get(f.name, '')} (default: {default})".strip()
        flag = "--" + f.name.replace("_", "-")
        if is_bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_)
        else:
            group.add_argument(flag, type=typ, nargs=nargs, default=argparse.SUPPRESS, help=help_, dest=f.name,
                               metavar=f.name.upper())


def given(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` that were given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def merged(base, cls, args: argparse.Namespace):
    """A copy of dataclass `base` with the command-line values applied (validated by `cls`)."""
    return cls(**{**{f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}, **given(args, cls)})
