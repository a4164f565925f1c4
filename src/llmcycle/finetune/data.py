"""Fine-tuning data: examples with a loss mask, packed or padded into rows a training step draws by id.

    JSONL {"prompt", "completion"}   -> ids = prompt + completion + eos,   mask on the completion
    JSONL {"messages": [...]}        -> the run's chat template,           mask on the assistant turns
    a task of `llmcycle eval`        -> its zero-shot prompt + answer,     mask on the answer
    Example(ids, mask) -> shifted:   idx = ids[:-1], targets = ids[1:] with -100 where mask[1:] is False

Rows (`Rows`) hold the shifted examples in seq_len slots. Padded: one example per row, right padding
(targets -100), so the causal mask already keeps real tokens off the padding. Packed: examples
first-fit into rows in a seeded order; each row carries segment ids and positions restarting at 0
per example, and `batch()` builds the block-diagonal causal mask that keeps attention inside each
example (a decoder forward `attn_mask`). `--train-on all` puts the loss on every token instead.
Bad lines are named with their line number; over-long examples are truncated (the end cut, counted
and warned) or skipped (counted); examples with no target token left are skipped (counted).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

IGNORE = -100


@dataclass
class Example:
    ids: list[int]  # prompt and completion tokens
    mask: list[bool]  # per token: True = a training target (its loss counts)


@dataclass
class DataSpec:
    """Where fine-tuning examples come from and how they become tokens."""

    source: str  # a .jsonl file, or task:NAME for a task of `llmcycle eval` (its exemplar pool)
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    messages_field: str = "messages"
    train_on: str = "completion"  # completion (prompt tokens masked) | all
    overlong: str = "truncate"  # truncate (cut the end) | skip
    limit: int | None = None  # the first N examples only

    def __post_init__(self) -> None:
        if self.train_on not in ("completion", "all"):
            raise ValueError(f"--train-on must be 'completion' or 'all', got {self.train_on!r}")
        if self.overlong not in ("truncate", "skip"):
            raise ValueError(f"--overlong must be 'truncate' or 'skip', got {self.overlong!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")


@dataclass
class Counts:
    read: int = 0
    truncated: int = 0
    skipped_long: int = 0
    skipped_empty: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"{self.read} examples read"]
        if self.truncated:
            parts.append(f"{self.truncated} truncated to the sequence length")
        if self.skipped_long:
            parts.append(f"{self.skipped_long} skipped as longer than the sequence length")
        if self.skipped_empty:
            parts.append(f"{self.skipped_empty} skipped with no target token left")
        return ", ".join(parts)


# ---------------------------------------------------------------- reading records


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object is an error."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--data {path}: no such file")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: each line must be a JSON object, got {type(obj).__name__}")
            out.append((n, obj))
    if not out:
        raise ValueError(f"{path} has no examples")
    return out


def task_pairs(name: str, data_dir: str | None = None) -> list[tuple[str, dict]]:
    """A task's exemplar pool as (where, {"prompt", "completion"}): the eval's zero-shot prompt and answer,
    so the model is trained on exactly what `llmcycle eval --shots 0` will ask it."""
    from llmcycle.evaluation.prompts import PromptBuilder
    from llmcycle.evaluation.tasks import load_task

    task = load_task(name)
    if task.kind != "generate":
        raise ValueError(f"task {name!r} is a {task.kind} task; fine-tuning takes generate tasks (e.g. dialogsum)")
    items, pool, same = task.load(data_dir)
    if same:
        raise ValueError(f"task {name!r} has no training pool apart from its evaluation data; "
                         "fine-tune on a JSONL file instead")
    builder = PromptBuilder(task, items, pool, False)
    return [(f"{task.name} pool record {i}", {"prompt": builder.render(r, []), "completion": task.exemplar(r)[
        len(task.question(r)):]}) for i, r in enumerate(pool)]


# ---------------------------------------------------------------- records -> examples


class Encoder:
    """Turns records into Examples with the run's tokenizer and prompt conventions."""

    def __init__(self, tok, style, spec: DataSpec) -> None:
        self.tok, self.style, self.spec = tok, style, spec
        if tok.eos_id is None:
            raise ValueError("the run's tokenizer has no end-of-sequence token to end each completion with")

    def pair(self, prompt: str, completion: str) -> Example:
        p = self.tok.encode(prompt, bos=self.style.add_bos)
        c = self.tok.encode(completion) + [self.tok.eos_id]
        return Example(p + c, [False] * len(p) + [True] * len(c))

    def chat(self, messages: list[dict], where: str) -> Example:
        """Assistant turns are targets: each one's tokens are what the conversation up to it adds
        after the generation prompt (rendered prefix by prefix, as TRL's assistant-only loss does)."""
        from llmcycle.inference.chat import encode_chat, render

        if not self.style.template:
            raise ValueError(f"{where}: chat examples need a chat template, and this run has none "
                             "(fine-tune an imported instruction model, or use prompt/completion examples)")
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f"{where}: each message must be {{\"role\": ..., \"content\": ...}} with strings")
        if not any(m["role"] == "assistant" for m in messages):
            raise ValueError(f"{where}: the conversation has no assistant turn to learn from")
        ids, mask = [], []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = encode_chat(self.tok, render(self.style, messages[:i], add_generation_prompt=True), messages[:i])
            upto = encode_chat(self.tok, render(self.style, messages[:i + 1], add_generation_prompt=False),
                               messages[:i + 1])
            if upto[:len(ids)] != ids or upto[:len(before)] != before:
                raise ValueError(f"{where}: the chat template does not render conversations prefix by prefix, "
                                 "so assistant tokens cannot be located; use --train-on all")
            mask += [False] * (len(before) - len(ids)) + [True] * (len(upto) - len(before))
            ids = upto
        full = encode_chat(self.tok, render(self.style, messages, add_generation_prompt=False), messages)
        mask += [False] * (len(full) - len(ids))  # trailing non-assistant turns
        return Example(full, mask)

    def record(self, obj: dict, where: str) -> Example:
        s = self.spec
        if s.messages_field in obj:
            msgs = obj[s.messages_field]
            if not isinstance(msgs, list) or not msgs:
                raise ValueError(f"{where}: field {s.messages_field!r} must be a non-empty list of messages")
            ex = self.chat(msgs, where)
        else:
            missing = [f for f in (s.prompt_field, s.completion_field) if f not in obj]
            if missing:
                raise ValueError(f"{where}: missing field(s) {missing}; the line has {sorted(obj)} (name the fields "
                                 f"with --prompt-field/--completion-field, or give {s.messages_field!r} for chat)")
            p, c = obj[s.prompt_field], obj[s.completion_field]
            if not isinstance(p, str) or not isinstance(c, str):
                raise ValueError(f"{where}: {s.prompt_field!r} and {s.completion_field!r} must be strings")
            ex = self.pair(p, c)
        if s.train_on == "all":
            ex.mask = [True] * len(ex.ids)
        return ex


def load_examples(spec: DataSpec, tok, style, max_tokens: int, data_dir: str | None = None) -> tuple[list[Example], Counts]:
    """Every example of `spec`, fitted to `max_tokens` (= seq_len + 1: the shift drops one)."""
    if spec.source.startswith("task:"):
        records = task_pairs(spec.source[5:], data_dir)
    else:
        records = [(f"{spec.source}:{n}", obj) for n, obj in read_jsonl(Path(spec.source))]
    if spec.limit:
        records = records[:spec.limit]
    enc, counts, out = Encoder(tok, style, spec), Counts(), []
    for where, obj in records:
        ex = enc.record(obj, where)
        counts.read += 1
        if len(ex.ids) > max_tokens:
            cut = Example(ex.ids[:max_tokens], ex.mask[:max_tokens])
            if spec.overlong == "skip" or not any(cut.mask[1:]):  # truncated, its prompt alone would fill the row
                counts.skipped_long += 1
                continue
            ex = cut
            counts.truncated += 1
        if not any(ex.mask[1:]):  # the first token is never a target (nothing precedes it)
            counts.skipped_empty += 1
            continue
        out.append(ex)
    if not out:
        raise ValueError(f"no usable example in {spec.source} ({counts.describe()}); raise --seq-len "
                         "or use --overlong truncate")
    return out, counts


def split(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded held-out split: round(val_fraction * n) examples, at least one, for validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    if len(examples) < 2:
        raise ValueError("need at least 2 examples to hold one out for validation (or give --val-data)")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = min(len(examples) - 1, max(1, round(val_fraction * len(examples))))
    val = set(order[:n_val])
    return [e for i, e in enumerate(examples) if i not in val], [e for i, e in enumerate(examples) if i in val]


# ---------------------------------------------------------------- examples -> rows -> batches


class Rows:
    """Shifted examples laid out in rows of at most seq_len tokens; `batch(ids)` is a forward's kwargs."""

    def __init__(self, examples: list[Example], seq_len: int, pack: bool, pad_id: int, seed: int = 0) -> None:
        self.seq_len, self.pack, self.pad_id = seq_len, pack, pad_id
        pieces = []  # (idx, targets) per example, each <= seq_len long
        for ex in examples:
            assert len(ex.ids) <= seq_len + 1, "load_examples fits examples to seq_len + 1"
            tgt = [t if m else IGNORE for t, m in zip(ex.ids[1:], ex.mask[1:])]
            pieces.append((ex.ids[:-1], tgt))
        if pack:  # first-fit in a seeded order (stable across runs, independent of the file order's lengths)
            order = list(range(len(pieces)))
            random.Random(seed).shuffle(order)
            rows: list[list[int]] = []
            room: list[int] = []
            for i in order:
                n = len(pieces[i][0])
                j = next((j for j, r in enumerate(room) if r >= n), None)
                if j is None:
                    rows.append([])
                    room.append(seq_len)
                    j = len(rows) - 1
                rows[j].append(i)
                room[j] -= n
            self.rows = rows
        else:
            self.rows = [[i] for i in range(len(pieces))]
        self.pieces = pieces
        self.tokens = sum(len(p[0]) for p in pieces)  # real (non-padding) input tokens
        self.targets = sum(sum(t != IGNORE for t in p[1]) for p in pieces)

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, ids) -> dict:
        """Rows `ids` as the decoder forward's kwargs: idx, targets (B, T) [, pos (B, T), attn_mask (B, 1, T, T)],
        T the longest row of this batch."""
        rows = [self.rows[int(i)] for i in ids]
        T = max(sum(len(self.pieces[k][0]) for k in r) for r in rows)
        idx = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        tgt = torch.full((len(rows), T), IGNORE, dtype=torch.long)
        seg = torch.full((len(rows), T), -1, dtype=torch.long)  # -1: padding
        pos = torch.zeros((len(rows), T), dtype=torch.long)
        for b, r in enumerate(rows):
            at = 0
            for s, k in enumerate(r):
                x, y = self.pieces[k]
                idx[b, at:at + len(x)] = torch.tensor(x)
                tgt[b, at:at + len(y)] = torch.tensor(y)
                seg[b, at:at + len(x)] = s
                pos[b, at:at + len(x)] = torch.arange(len(x))
                at += len(x)
            pos[b, at:] = torch.arange(T - at)  # padding: any in-range position (never attended, never scored)
        out = {"idx": idx, "targets": tgt}
        if self.pack:
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            out["pos"] = pos
            out["attn_mask"] = ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]  # (B, 1, T, T)
        return out

    def real_tokens(self, ids) -> int:
        return sum(len(self.pieces[k][0]) for i in ids for k in self.rows[int(i)])
