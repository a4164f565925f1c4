"""lm-evaluation-harness through `llmcycle serve` gives `llmcycle eval`'s accuracy on the same run and prompts.

One local task, two ways (bench/lm_eval/: the first 60 SST-2 test sentences, zero-shot, log-likelihood
multiple choice with the same prompt and continuations in both definitions):
  1. `llmcycle eval --run RUN --task bench/lm_eval/sst2_60.json --shots 0` (in process, the product's CLI);
  2. lm-eval's `local-completions` model against `llmcycle serve --run RUN` on loopback: completions
     with the prompt as token ids, `echo` + `logprobs` (prompt-token log-probabilities), tokenized by
     the run's own tokenizer.json loaded with transformers (lm-eval's `huggingface` tokenizer backend).
Prints both accuracies, how many items get the same prediction, and the largest difference of a
choice's log-likelihood; exits 1 when the accuracies differ. Needs the `lmeval` extra
(pip install -e '.[lmeval]'); the default run is SmolLM2-135M-Instruct as bench/serve_load.py makes it.

    .venv/bin/python bench/lm_eval_serve.py [--run runs/bench-smollm2] [--limit 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASK = HERE / "lm_eval"
sys.path.insert(0, str(HERE))

import serve_load  # noqa: E402  (the server start-up and readiness helpers)


def llmcycle_eval(run: Path, limit: int | None, threads: int, out: Path) -> tuple[float, list[list[float]]]:
    """-> accuracy (0-1) and each item's choice log-likelihoods, from `llmcycle eval`."""
    from llmcycle.cli import main as cli

    argv = ["eval", "--run", str(run), "--task", str(TASK / "sst2_60.json"), "--shots", "0", "--out", str(out),
            "--threads", str(threads), "--quiet", "--show", "0"] + (["--limit", str(limit)] if limit else [])
    if cli(argv) != 0:
        raise RuntimeError("llmcycle eval failed")
    res = json.loads((out / "sst2_60.json").read_text())
    col = res["columns"][0]
    return col["accuracy"] / 100, [r["logprobs"] for r in res["records"][col["column"]]]


def lm_eval_through_server(url: str, run: Path, limit: int | None, work: Path) -> tuple[float, list[list[float]]]:
    """-> accuracy and each item's choice log-likelihoods, from lm-eval's local-completions on `url`."""
    import yaml
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from llmcycle.rundir import TOKENIZER, TOKENIZER_CONFIG, tokenizer_path

    tok = work / "tokenizer"  # the run's tokenizer as a transformers folder
    tok.mkdir()
    shutil.copy(tokenizer_path(run), tok / TOKENIZER)
    shutil.copy(run / TOKENIZER_CONFIG, tok / TOKENIZER_CONFIG)
    tasks = work / "tasks"
    tasks.mkdir()
    cfg = yaml.safe_load((TASK / "sst2_60.yaml").read_text())
    cfg["dataset_kwargs"]["data_files"]["test"] = str(TASK / "sst2_60.jsonl")
    (tasks / "sst2_60.yaml").write_text(yaml.safe_dump(cfg))
    out = simple_evaluate(
        model="local-completions",
        model_args={"base_url": url + "/v1/completions", "model": "smollm2", "tokenizer_backend": "huggingface",
                    "tokenizer": str(tok), "max_length": 2048, "max_retries": 1},
        tasks=["sst2_60"], task_manager=TaskManager(include_path=str(tasks)), limit=limit, log_samples=True,
        batch_size=1)
    samples = sorted(out["samples"]["sst2_60"], key=lambda s: s["doc_id"])
    return out["results"]["sst2_60"]["acc,none"], [[float(r[0][0]) for r in s["resps"]] for s in samples]


def compare(run: Path, limit: int | None = None, threads: int = 1, port: int = 8741) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        acc_eval, ll_eval = llmcycle_eval(run, limit, threads, work / "eval")
        proc = serve_load.start_llmcycle("fp32", port, threads, max_batch=4, max_seq_len=2048, run=run)
        url = f"http://127.0.0.1:{port}"
        try:
            serve_load.wait_ready(url, proc, 600)
            acc_lm, ll_lm = lm_eval_through_server(url, run, limit, work)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    same = sum(max(range(len(a)), key=a.__getitem__) == max(range(len(b)), key=b.__getitem__)
               for a, b in zip(ll_eval, ll_lm))
    diff = max(abs(x - y) for a, b in zip(ll_eval, ll_lm) for x, y in zip(a, b))
    n = len(ll_eval)
    return {"items": n, "acc_llmcycle_eval": acc_eval, "acc_lm_eval_server": acc_lm,
            "correct_llmcycle_eval": round(acc_eval * n), "correct_lm_eval_server": round(acc_lm * n),
            "same_prediction": same, "max_loglik_diff": diff}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=None, help="llmcycle run (default: SmolLM2-135M-Instruct, imported on first use)")
    ap.add_argument("--limit", type=int, default=None, help="the first N items (default: all 60)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both")
    ap.add_argument("--port", type=int, default=8741)
    args = ap.parse_args()
    run = Path(args.run) if args.run else serve_load.ensure_run()
    r = compare(run, args.limit, args.threads, args.port)
    print(f"{r['items']} items: llmcycle eval accuracy {r['acc_llmcycle_eval']:.4f} ({r['correct_llmcycle_eval']} "
          f"right), lm-eval local-completions through llmcycle serve {r['acc_lm_eval_server']:.4f} "
          f"({r['correct_lm_eval_server']} right); same prediction on {r['same_prediction']}/{r['items']}; "
          f"largest log-likelihood difference {r['max_loglik_diff']:.2e}")
    # (the two accuracies are the same count over the same items; as floats, 81.67 / 100 and 49 / 60 may differ)
    return 0 if r["correct_llmcycle_eval"] == r["correct_lm_eval_server"] else 1


if __name__ == "__main__":
    sys.exit(main())
