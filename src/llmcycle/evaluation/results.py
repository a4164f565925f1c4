"""An evaluation's results: the table (one column per shot count), a side-by-side view of a few
examples, and the files: the task's JSON (everything, per example; `rundir.eval_path(run, task)` in a
run, the same name in an --out folder) and a Markdown page beside it (table + side by side).
"""

from __future__ import annotations

import json
from pathlib import Path

from llmcycle import rundir
from llmcycle.atomic import atomic_write_text

_LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum",
           "accuracy": "accuracy (%)", "exact_match": "exact match (%)"}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def table(result: dict) -> str:
    """Markdown: one column per shot count; rows per setting: metrics, prompt length, exemplars, time."""
    shots = result["config"]["shots"]
    lines = [f"| {result['task']['name']} ({result['columns'][0]['n']} examples) | "
             + " | ".join(f"{k}-shot" for k in shots) + " |",
             "|---|" + "---:|" * len(shots)]
    by = {(c["setting"], c["shots"]): c for c in result["columns"]}
    generate = result["task"]["kind"] == "generate"
    rows = [(m, _LABELS.get(m, m)) for m in result["metrics"]]
    if generate:
        rows += [("distinct_1", "distinct-1"), ("distinct_2", "distinct-2"), ("completion_words", "words per answer")]
    rows += [("prompt_tokens", "prompt tokens (mean)"), ("exemplars", "exemplars that fit (mean)"),
             ("seconds", "time (s)"), ("examples_per_s", "examples/s")]
    for setting in result["config"]["settings"]:
        for key, label in rows:
            name = f"{setting}: {label}" if len(result["config"]["settings"]) > 1 or generate else label
            cells = []
            for k in shots:
                c = by[(setting, k)]
                cell = _fmt(c[key])
                if key == "exemplars":
                    cell = f"{c[key]:.2f} / {k}" + (f" ({c['overflow']} overflow)" if c["overflow"] else "")
                cells.append(cell)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 1] + "…"


def side_by_side(result: dict, n: int = 3, width: int = 160) -> str:
    """The first n examples: question, reference, and the answer of every column with its score."""
    if n <= 0:
        return ""
    cols = result["records"]
    first = next(iter(cols.values()))
    template_end = result["task"]["template"].split("{")[0]
    out = []
    main = result["metrics"][0]
    for i in range(min(n, len(first))):
        rec = first[i]
        question = rec["prompt"].rsplit(result["task"]["separator"], 1)[-1]
        out.append(f"### example {i} ({rec['id']})\n")
        out.append(f"- **question**: {_short(question.removeprefix(template_end), width)}")
        ref = rec["reference"]
        out.append(f"- **reference**: {_short(ref[0] if isinstance(ref, list) else ref, width)}")
        for name, recs in cols.items():
            r = recs[i]
            out.append(f"- **{name}** ({main} {r['score'][main]:.1f}): {_short(r['completion'], width)}")
        out.append("")
    return "\n".join(out)


def results_path(task: str, run: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Where a task's JSON results go: `rundir.eval_path(run, task)`, or the same file name in `out`."""
    if out is None:
        if run is None:
            raise ValueError("no run directory to write the results into: give --out DIR")
        return rundir.eval_path(Path(run), task)
    return Path(out) / rundir.eval_path(Path(), task).name


def write(result: dict, json_path: str | Path, show: int = 3) -> tuple[Path, Path]:
    """json_path (all records) and the Markdown page beside it (table + side-by-side); returns both paths."""
    js = Path(json_path)
    md = js.with_suffix(".md")
    js.parent.mkdir(parents=True, exist_ok=True)
    name = result["task"]["name"]
    atomic_write_text(js, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    text = (f"# {name}: {result['model']}\n\n{table(result)}\n\n## Side by side\n\n{side_by_side(result, show)}\n")
    atomic_write_text(md, text)
    return js, md
