"""Data stage: `corpus` (documents from files, folders, JSONL or the stdlib), `tokenizer`
(byte-level BPE, bytes, imported Hugging Face files), `prepare` (token shards + meta.json, swapped
into RUN/data atomically; `prepare_run` for a run directory), `shards` (the on-disk format and its
checks), `mixture` (several sources at given weights), `loader` (deterministic, resumable windows
for 1..N ranks, weighted for a mixture) and `cli` (the `prepare` verb). Import from the submodules.

Imports point one way: cli -> prepare -> mixture -> corpus; prepare, mixture, loader -> shards.
"""
