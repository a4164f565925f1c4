"""Evaluation tasks as small declarative definitions: where the data is, which fields are the
question and the reference, the templates that turn a record into a prompt, and the metric.

A task is a `Task` dataclass or the same thing as a JSON file (`llmcycle eval --task my.json`):

    {"name": "sst2", "kind": "choice", "metric": "accuracy",
     "data": {"path": "sst2/stsa.binary.test", "format": "label-text"},
     "pool": {"path": "sst2/stsa.binary.train", "format": "label-text"},
     "instruction": "Classify the sentiment of each review as positive or negative.",
     "template": "Review: {text}\\nSentiment:", "answer": " {choice}", "separator": "\\n\\n",
     "label_field": "label", "choices": {"0": "negative", "1": "positive"}}

Templates are Python format strings over a record's fields ({{ and }} for literal braces). A
prompt is `instruction`, then each exemplar as `template + answer`, then the item's `template`,
joined by `separator`. Choice tasks score each `answer` (with {choice} set to each label word) by
log-likelihood; generation tasks let the model write the answer and compare it with the
`references` fields.

Data comes from local files or the Hugging Face hub (`records.py`: a task's `Source`).
`SHIPPED` holds the definitions for dialogsum, sst2, agnews and gsm8k.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmcycle.evaluation.records import Source, load_records, resolve_data_dir

KINDS = ("generate", "choice")
METRICS = {"generate": ("rouge", "exact_match"), "choice": ("accuracy",)}


@dataclass
class Task:
    name: str
    kind: str  # generate (the model writes the answer) | choice (label words ranked by log-likelihood)
    metric: str  # rouge | exact_match (generate); accuracy (choice)
    data: Source  # the items to evaluate (the first --limit of them)
    template: str  # the question, e.g. "Review: {text}\nSentiment:"
    answer: str  # appended to the template for exemplars, e.g. " {choice}" or " {summary}"
    pool: Source | None = None  # where exemplars come from; None: the data itself, minus the item
    instruction: str = ""  # text before everything (empty: none)
    separator: str = "\n\n"  # between instruction, exemplars and question
    references: list[str] = field(default_factory=list)  # generate: fields holding reference answers
    label_field: str | None = None  # choice: the field holding the gold label
    choices: dict[str, str] = field(default_factory=dict)  # choice: label value -> label word ({choice})
    choice_norm: str = "mean"  # choice: rank by mean (per token) or sum of continuation log-probs
    reduce: str = "max"  # rouge with several references: max or mean over them
    max_new_tokens: int = 64  # generate: default answer length
    stop: list[str] = field(default_factory=list)  # generate: the answer ends before any of these
    description: str = ""
    root: str | None = field(default=None, compare=False)  # folder relative paths resolve against

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = Source(**self.data)
        if isinstance(self.pool, dict):
            self.pool = Source(**self.pool)
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.metric not in METRICS[self.kind]:
            raise ValueError(f"task {self.name!r}: metric {self.metric!r} does not fit a {self.kind} task; "
                             f"use one of {', '.join(METRICS[self.kind])}")
        if self.kind == "choice":
            if not self.label_field or len(self.choices) < 2:
                raise ValueError(f"task {self.name!r}: a choice task needs 'label_field' and at least two 'choices'")
            if "{choice}" not in self.answer:
                raise ValueError(f"task {self.name!r}: the answer template of a choice task must contain {{choice}}")
        elif not self.references:
            raise ValueError(f"task {self.name!r}: a generate task needs 'references' (the field(s) with the answer)")
        if self.choice_norm not in ("mean", "sum"):
            raise ValueError(f"task {self.name!r}: choice_norm must be 'mean' or 'sum', got {self.choice_norm!r}")
        if self.reduce not in ("max", "mean"):
            raise ValueError(f"task {self.name!r}: reduce must be 'max' or 'mean', got {self.reduce!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"task {self.name!r}: max_new_tokens must be >= 1")

    # ------------------------------------------------------------ rendering

    def fields(self, record: dict) -> dict:
        """The record plus {choice}: its label word (choice tasks)."""
        if self.kind != "choice":
            return record
        label = str(self._get(record, self.label_field))
        if label not in self.choices:
            raise ValueError(f"task {self.name!r}: label {label!r} is not one of the choices {list(self.choices)}")
        return {**record, "choice": self.choices[label]}

    def question(self, record: dict) -> str:
        return self._format(self.template, record)

    def exemplar(self, record: dict) -> str:
        return self._format(self.template, record) + self._format(self.answer, self.fields(record))

    def continuations(self, record: dict) -> list[str]:
        """Choice tasks: the answer text for every label word, in `choices` order."""
        return [self._format(self.answer, {**record, "choice": word}) for word in self.choices.values()]

    def gold(self, record: dict) -> int:
        """Choice tasks: the index of the gold label in `choices`."""
        return list(self.choices).index(str(self._get(self.fields(record), self.label_field)))

    def reference_texts(self, record: dict) -> list[str]:
        """Generate tasks: the first reference field is required; further ones are used when present."""
        refs = [str(self._get(record, self.references[0]))]
        refs += [str(record[f]) for f in self.references[1:] if record.get(f) not in (None, "")]
        return refs

    def _get(self, record: dict, name: str) -> Any:
        if name not in record:
            raise ValueError(f"task {self.name!r}: records have no field {name!r}; "
                             f"fields present: {', '.join(sorted(record))}")
        return record[name]

    def _format(self, template: str, record: dict) -> str:
        try:
            return template.format(**record)
        except KeyError as e:
            raise ValueError(f"task {self.name!r}: the template {template!r} needs field {e.args[0]!r}, "
                             f"which the records lack; fields present: {', '.join(sorted(record))}") from None
        except (IndexError, ValueError) as e:
            raise ValueError(f"task {self.name!r}: bad template {template!r} ({e}); "
                             "name fields as {field} and write literal braces as {{ }}") from None

    def check(self, records: list[dict], what: str) -> None:
        """Fail early, naming the field, if the first record cannot be rendered."""
        if not records:
            raise ValueError(f"task {self.name!r}: the {what} data is empty")
        first = records[0]
        self.exemplar(first)
        if self.kind == "choice":
            self.gold(first)
        else:
            self.reference_texts(first)

    # ------------------------------------------------------------ data

    def load(self, data_dir: str | Path | None = None) -> tuple[list[dict], list[dict], bool]:
        """-> (items, pool, pool_is_data). Raises ValueError on missing files, fields or empty data."""
        root = resolve_data_dir(data_dir, self.root)
        items = load_records(self.data, root)
        self.check(items, "evaluation")
        if self.pool is None or self.pool == self.data:
            return items, items, True
        pool = load_records(self.pool, root)
        self.check(pool, "exemplar pool")
        return items, pool, False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("root")
        return d

    @classmethod
    def from_dict(cls, d: dict, root: str | None = None) -> "Task":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown task field(s) {unknown}; known: {', '.join(sorted(known - {'root'}))}")
        try:
            return cls(**{**d, "root": root})
        except TypeError as e:
            raise ValueError(f"incomplete task definition: {e}") from None


# ---------------------------------------------------------------- shipped definitions

_AGNEWS_ESCAPES = {"\\": " ", " #39;": "'", " quot;": '"', " #36;": "$", " amp;": "&", " #151;": "-",
                   " #146;": "'", " #145;": "'", " #147;": '"', " #148;": '"', " lt;": "<", " gt;": ">"}

SHIPPED: dict[str, dict] = {
    "dialogsum": {
        "name": "dialogsum", "kind": "generate", "metric": "rouge",
        "description": "DialogSum dialogue summarization (test set, 3 references: ROUGE is the max over them)",
        "data": {"path": "dialogsum/dialogsum.test.jsonl", "rename": {"summary1": "summary"},
                 "hub": "knkarthick/dialogsum", "split": "test"},
        "pool": {"path": "dialogsum/dialogsum.dev.jsonl", "hub": "knkarthick/dialogsum", "split": "validation"},
        "instruction": "Summarize each dialogue in one or two sentences.",
        "template": "Dialogue:\n{dialogue}\nSummary:", "answer": " {summary}", "separator": "\n\n",
        "references": ["summary", "summary2", "summary3"], "reduce": "max",
        "max_new_tokens": 80, "stop": ["\n"],
    },
    "sst2": {
        "name": "sst2", "kind": "choice", "metric": "accuracy",
        "description": "SST-2 sentence sentiment (stsa.binary test; exemplars from train)",
        "data": {"path": "sst2/stsa.binary.test", "format": "label-text"},
        "pool": {"path": "sst2/stsa.binary.train", "format": "label-text"},
        "instruction": "Classify the sentiment of each review as positive or negative.",
        "template": "Review: {text}\nSentiment:", "answer": " {choice}", "separator": "\n\n",
        "label_field": "label", "choices": {"0": "negative", "1": "positive"},
    },
    "agnews": {
        "name": "agnews", "kind": "choice", "metric": "accuracy",
        "description": "AG News topic (test split; exemplars from the same split, never the item itself)",
        "data": {"path": "agnews/test.csv", "format": "csv", "replace": _AGNEWS_ESCAPES,
                 "rename": {"Class Index": "label", "Title": "title", "Description": "description"}},
        "instruction": "Classify each news article as World, Sports, Business or Technology.",
        "template": "Article: {title}. {description}\nTopic:", "answer": " {choice}", "separator": "\n\n",
        "label_field": "label", "choices": {"1": "World", "2": "Sports", "3": "Business", "4": "Technology"},
    },
    "gsm8k": {
        "name": "gsm8k", "kind": "generate", "metric": "exact_match",
        "description": "GSM8K grade-school math (test; worked exemplars from train); exact match of the final number",
        "data": {"path": "gsm8k/test.jsonl", "hub": "openai/gsm8k", "hub_config": "main", "split": "test"},
        "pool": {"path": "gsm8k/train.jsonl", "hub": "openai/gsm8k", "hub_config": "main", "split": "train"},
        "instruction": "Solve each math problem step by step. End with '#### ' and the final number.",
        "template": "Question: {question}\nAnswer:", "answer": " {answer}", "separator": "\n\n",
        "references": ["answer"], "max_new_tokens": 256, "stop": ["\n\n", "\nQuestion:"],
    },
}


def task_names() -> list[str]:
    return sorted(SHIPPED)


def load_task(name_or_path: str | Path) -> Task:
    """A shipped task by name, or a task JSON file (relative data paths resolve against its folder)."""
    s = str(name_or_path)
    if s in SHIPPED:
        return Task.from_dict(json.loads(json.dumps(SHIPPED[s])))
    path = Path(s)
    if path.is_file():
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path} must hold one JSON object (a task definition)")
        return Task.from_dict(d, root=str(path.parent))
    raise ValueError(f"unknown task {s!r}: use one of {', '.join(task_names())} or the path of a task JSON file")
