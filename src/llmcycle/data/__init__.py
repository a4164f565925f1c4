"""Data stage: `corpus` (documents from files, folders, JSONL or the stdlib), `tokenizer`
(byte-level BPE, bytes, imported Hugging Face files), `prepare` (token shards + meta.json) and
`loader` (deterministic, resumable windows for 1..N ranks). Import from the submodules.
"""
