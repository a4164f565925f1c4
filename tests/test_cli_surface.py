"""The CLI surface, pinned: every verb and every flag it takes (tests/cli_surface.json).

Adding, renaming or removing a verb or a flag is a deliberate act: it fails here until
tests/cli_surface.json is regenerated (`python tests/test_cli_surface.py > tests/cli_surface.json`)
and the README and docs say the same."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmcycle.cli import build_parser

PINNED = Path(__file__).with_name("cli_surface.json")


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    out = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            out += [f"{name} {flag}" for name, sub in a.choices.items() for flag in _flags(sub)]
        elif a.option_strings:
            if a.dest != "help":
                out.append(max(a.option_strings, key=len))
        else:
            out.append(a.dest.upper())  # a positional argument
    return sorted(out)


def surface() -> dict[str, list[str]]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {verb: _flags(p) for verb, p in sub.choices.items()}


def test_every_verb_and_flag_is_pinned():
    pinned, live = json.loads(PINNED.read_text(encoding="utf-8")), surface()
    assert sorted(live) == sorted(pinned), "verbs changed"
    for verb in pinned:
        assert live[verb] == pinned[verb], f"flags of `llmcycle {verb}` changed"


def test_every_flag_of_every_verb_has_help():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for verb, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                text = (action.help or "").split("(default")[0].strip()
                assert text, f"llmcycle {verb} {action.option_strings} has no help"


if __name__ == "__main__":
    print(json.dumps(surface(), indent=1))
