"""In-context learning evaluation: a task at several shot counts and generation settings.

    evaluate_task(task, adapter, EvalConfig(shots=[0, 1, 5], settings=[SamplingConfig(), ...]))
      for each setting x shot count ("column"):
        prompts  <- PromptBuilder (seeded exemplars, never the item; fitted to the context)
        choice   -> log-likelihood of every label word; prediction = the best (mean or sum per token)
        generate -> completions in batches (sorted by length, left-padded); scored by the metric
      -> {"task", "model", "columns": [summary...], "records": {column: [per-example record...]}}

A setting is a `SamplingConfig`; its column label is `describe(short=True)` ('greedy',
't=0.7,k=40'), which `SamplingConfig.parse` reads back. A choice task has no decoding settings:
it is scored once per shot count, whatever `settings` says.
Per-example records keep the rendered prompt, its length in tokens, the exemplars used, the
completion (or the label-word log-likelihoods), the reference and the score.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from llmcycle.evaluation import metrics
from llmcycle.evaluation.interface import Adapter
from llmcycle.evaluation.prompts import Prompt, PromptBuilder
from llmcycle.evaluation.tasks import Task
from llmcycle.inference.config import SamplingConfig


# The sweep: greedy, then temperature 0.7 / 1.0 / 1.5 with top-k or top-p.
SWEEP = [SamplingConfig(), SamplingConfig(0.7, top_k=40), SamplingConfig(1.0, top_p=0.9),
         SamplingConfig(1.5, top_p=0.9)]


@dataclass
class EvalConfig:
    shots: list[int] = field(default_factory=lambda: [0])
    limit: int | None = None  # the first N items (None: all)
    seed: int = 0  # exemplar draws and sampling
    batch_size: int = 8  # prompts per forward pass
    settings: list[SamplingConfig] = field(default_factory=lambda: [SamplingConfig()])  # greedy
    max_new_tokens: int | None = None  # None: the task's own
    progress: bool = False

    def __post_init__(self) -> None:
        if not self.shots:
            raise ValueError("give at least one shot count, e.g. --shots 0,1,5")
        if any(k < 0 for k in self.shots):
            raise ValueError(f"shot counts must be >= 0, got {self.shots}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.settings:
            raise ValueError("give at least one generation setting")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")


def metric_names(task: Task) -> list[str]:
    return {"rouge": list(metrics.ROUGE_TYPES), "accuracy": ["accuracy"], "exact_match": ["exact_match"]}[task.metric]


def column_name(setting: str, shots: int) -> str:
    return f"{setting}/{shots}-shot"


def _item_id(record: dict, index: int) -> str:
    for key in ("id", "fname", "idx"):
        if key in record:
            return str(record[key])
    return str(index)


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i:i + size] for i in range(0, len(order), size)]


def _bar(total: int, enabled: bool, desc: str):
    return tqdm(total=total, disable=not enabled, desc=desc, unit="ex", leave=False, dynamic_ncols=True)


def build_prompts(builder: PromptBuilder, adapter: Adapter, k: int, n: int, budget: int | None) -> list[Prompt]:
    return [builder.build(i, k, adapter.count_tokens, budget) for i in range(n)]


def _score_choice(task: Task, adapter: Adapter, items: list[dict], prompts: list[Prompt], cfg: EvalConfig,
                  bar) -> list[dict]:
    conts = [task.continuations(it) for it in items]
    words = list(task.choices.values())
    records: list[dict] = [{} for _ in items]
    order = sorted(range(len(items)), key=lambda i: -(prompts[i].tokens or 0))
    for batch in _batches(order, cfg.batch_size):
        pairs = [(prompts[i].text, c) for i in batch for c in conts[i]]
        results = adapter.loglikelihood(pairs)
        for j, i in enumerate(batch):
            res = results[j * len(words):(j + 1) * len(words)]
            ranked = [s if task.choice_norm == "sum" else s / n for s, n, _ in res]
            pred = max(range(len(words)), key=lambda c: ranked[c])
            gold = task.gold(items[i])
            records[i] = {"choices": words, "logprobs": [s for s, _, _ in res], "tokens": [n for _, n, _ in res],
                          "ranking_score": ranked, "prediction": words[pred], "reference": words[gold],
                          "completion": conts[i][pred], "score": {"accuracy": 100.0 * (pred == gold)}}
        bar.update(len(batch))
    return records


def _score_generate(task: Task, adapter: Adapter, items: list[dict], prompts: list[Prompt], cfg: EvalConfig,
                    setting: SamplingConfig, max_new: int, bar) -> list[dict]:
    records: list[dict] = [{} for _ in items]
    order = sorted(range(len(items)), key=lambda i: -(prompts[i].tokens or 0))  # similar lengths batch together
    for b, batch in enumerate(_batches(order, cfg.batch_size)):
        seed = None if setting.temperature == 0 else cfg.seed * 1_000_003 + b
        outs = adapter.generate([prompts[i].text for i in batch], max_new, setting, task.stop, seed)
        for i, text in zip(batch, outs):
            refs = task.reference_texts(items[i])
            if task.metric == "rouge":
                score = metrics.rouge(text, refs, task.reduce)
            else:
                score = {"exact_match": 100.0 * metrics.exact_match(text, refs[0]),
                         "predicted_number": metrics.final_number(text), "reference_number": metrics.final_number(refs[0])}
            records[i] = {"completion": text, "reference": refs if len(refs) > 1 else refs[0], "score": score}
        bar.update(len(batch))
    return records


def evaluate_task(task: Task, adapter: Adapter, cfg: EvalConfig, data_dir=None) -> dict:
    """Run `task` at every shot count and setting of `cfg`; return the summary and per-example records."""
    items, pool, pool_is_items = task.load(data_dir)
    items = items[:cfg.limit] if cfg.limit else items
    builder = PromptBuilder(task, items, pool, pool_is_items, cfg.seed)
    for k in cfg.shots:
        builder.check_shots(k)  # k > pool: fail before any model time is spent
    settings = cfg.settings
    if task.kind == "choice":
        if len(settings) > 1 or settings[0].temperature != 0:
            warnings.warn(f"task {task.name!r} ranks label words by log-likelihood: decoding settings do not apply",
                          stacklevel=2)
        settings = [SamplingConfig()]
        names = ["loglik"]
        max_new = max(adapter.count_tokens(c) for c in task.continuations(items[0]))
    else:
        if not adapter.can_generate:
            raise ValueError(f"task {task.name!r} needs generation, which a {adapter.describe()} model cannot do; "
                             "choose a choice task (sst2, agnews)")
        names = [s.describe(short=True) for s in settings]
        max_new = cfg.max_new_tokens or task.max_new_tokens
    budget = adapter.prompt_budget(max_new)
    n_cols = len(settings) * len(cfg.shots)
    bar = _bar(n_cols * len(items), cfg.progress, f"{task.name}")
    columns, records = [], {}
    prompts_for: dict[int, list[Prompt]] = {}
    for setting, sname in zip(settings, names):
        for k in cfg.shots:
            bar.set_description(f"{task.name} {sname} {k}-shot")
            t0 = time.perf_counter()
            if k not in prompts_for:
                prompts_for[k] = build_prompts(builder, adapter, k, len(items), budget)
            prompts = prompts_for[k]
            if task.kind == "choice":
                recs = _score_choice(task, adapter, items, prompts, cfg, bar)
            else:
                recs = _score_generate(task, adapter, items, prompts, cfg, setting, max_new, bar)
            seconds = time.perf_counter() - t0
            for i, (r, p) in enumerate(zip(recs, prompts)):
                r.update(index=i, id=_item_id(items[i], i), shots=k, used=p.used,
                         exemplars=[_item_id(pool[j], j) for j in p.exemplars], prompt_tokens=p.tokens,
                         overflow=p.overflow, prompt=p.text)
            summary = {"column": column_name(sname, k), "setting": sname, "shots": k, "n": len(recs)}
            for m in metric_names(task):
                summary[m] = sum(r["score"][m] for r in recs) / len(recs)
            if task.kind == "generate":
                texts = [r["completion"] for r in recs]
                summary.update(distinct_1=metrics.distinct_n(texts, 1), distinct_2=metrics.distinct_n(texts, 2),
                               completion_words=sum(len(t.split()) for t in texts) / len(texts))
            summary.update(prompt_tokens=sum(p.tokens for p in prompts) / len(prompts),
                           exemplars=sum(p.used for p in prompts) / len(prompts), overflow=sum(p.overflow for p in prompts),
                           seconds=seconds, examples_per_s=len(recs) / seconds if seconds > 0 else float("inf"))
            columns.append(summary)
            records[summary["column"]] = recs
    bar.close()
    return {"task": task.to_dict(), "model": adapter.describe(), "context": adapter.max_seq_len,
            "config": {"shots": cfg.shots, "limit": cfg.limit, "seed": cfg.seed, "batch_size": cfg.batch_size,
                       "max_new_tokens": max_new if task.kind == "generate" else None,
                       "settings": names},
            "metrics": metric_names(task), "columns": columns, "records": records}
