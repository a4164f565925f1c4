"""`llmcycle run`: the whole lifecycle in one command, on the default corpus, in a few minutes.

    scope (config) -> prepare (corpus, tokenizer, shards) -> pretrain (time budget) ->
    evaluate (validation loss, bits per byte) -> prompt (greedy and two sampling settings) -> report.md

`--family encoder|seq2seq` trains the masked-LM encoder or the span-corruption encoder-decoder of
the same width and depth instead; their samples are fill-mask predictions and span infilling.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmcycle.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from llmcycle.inference.generate import GenerationConfig, generate
from llmcycle.inference.sampling import SamplingConfig
from llmcycle import rundir
from llmcycle.atomic import atomic_write_text
from llmcycle.lifecycle.report import write_report

CODE_PROMPTS = [
    "def fibonacci(n):\n",
    "import os\n\n\ndef list_python_files(root):\n",
    "class Stack:\n    def __init__(self):\n",
]
SETTINGS = [
    SamplingConfig(temperature=0.0),
    SamplingConfig(temperature=0.8, top_k=50),
    SamplingConfig(temperature=1.0, top_p=0.9),
]


def default_config(source: str, budget: float, max_bytes: int | None, family: str = "decoder") -> RunConfig:
    """The default run: a small Llama-style decoder (or an encoder / encoder-decoder of the same
    width and depth, `family`) sized for ~3 minutes on two CPU cores."""
    return RunConfig(
        # ~1.3M parameters (half in the tied embedding), ~10 MFLOPs per training token: on two
        # cores that is ~1.5M tokens in three minutes. Chinchilla would pick an even smaller model
        # for this compute; this size still writes recognisable Python.
        model=ModelConfig(family=family, n_layer=4, d_model=128, n_head=4, max_seq_len=256),
        data=DataConfig(source=source, max_bytes=max_bytes),
        train=TrainConfig(seq_len=256, batch_size=16, lr=3e-3, warmup_steps=20, max_time=budget,
                          eval_every=50, eval_batches=8, ckpt_every=100),
    )


def _fresh_dir(out: Path) -> None:
    """Reuse an earlier `llmcycle run` directory; refuse to clobber anything else."""
    if out.exists() and any(out.iterdir()):
        if not rundir.is_run(out):
            raise ValueError(f"{out} exists and is not an llmcycle run directory; choose another --out")
        rundir.clear_lifecycle_outputs(out)
    out.mkdir(parents=True, exist_ok=True)


def sample_table(model, tok, prompts: list[str], settings: list[SamplingConfig], max_new_tokens: int = 80,
                 seed: int = 0) -> list[dict]:
    rows = []
    for s in settings:
        gen = GenerationConfig(max_new_tokens=max_new_tokens, sampling=s, seed=seed, truncate="left")
        for c in generate(model, tok, prompts, gen):
            rows.append({"setting": s.describe(), "prompt": c.prompt, "completion": c.text, "finish": c.finish_reason})
    return rows


def family_samples(model, tok, family: str) -> list[dict]:
    """Completions for a decoder, fill-mask predictions for an encoder, span infilling for seq2seq."""
    from llmcycle.lifecycle import families

    if family == "encoder":
        print("[3/4] fill-mask: the top 5 tokens for each <mask>")
        return families.fill_mask_rows(model, tok)
    if family == "seq2seq":
        print("[3/4] span infilling: greedy and two sampling settings")
        return families.infill_rows(model, tok, SETTINGS)
    print("[3/4] prompt: greedy and two sampling settings")
    return sample_table(model, tok, CODE_PROMPTS, SETTINGS)


def _size_model(cfg: RunConfig, meta: dict, args) -> dict | None:
    """Decoder runs: the compute-optimal model for the budget (scale/sizing.py); None keeps the default."""
    if cfg.model.family != "decoder" or getattr(args, "size", "fixed") != "compute-optimal" or not cfg.train.max_time:
        return None
    from llmcycle.scale.sizing import load_lab_fit, measure_flops_per_second, size_for_budget  # torch: only when run

    fps = measure_flops_per_second(cfg.model, cfg.train.seq_len, cfg.train.batch_size)
    lab, why = load_lab_fit(getattr(args, "scale_fit", None), cfg.data, cfg.train.seq_len)
    s = size_for_budget(cfg.train.max_time, meta["vocab_size"], cfg.train.seq_len, fps, lab)
    s["lab_fit"] = why
    print(f"      sized by {s['rule']}: C = {s['compute']:.3g} FLOPs -> N_opt {s['n_opt']:,.0f} -> "
          f"{s['params']:,} params ({why})")
    return s


def run_lifecycle(args) -> dict:
    from llmcycle.data.prepare import prepare_run
    from llmcycle.train.loop import train

    out = Path(args.out)
    _fresh_dir(out)
    cfg = default_config(args.corpus, args.budget, args.max_bytes, getattr(args, "family", "decoder"))
    progress = not args.quiet
    print(f"[1/4] prepare: corpus={cfg.data.source!r} -> {rundir.data_dir(out)}")
    meta, cfg = prepare_run(out, cfg.data, cfg, progress=progress)
    print(f"      {meta['splits']['train']['tokens']:,} train / {meta['splits']['val']['tokens']:,} val tokens, vocab {meta['vocab_size']}")
    sizing = _size_model(cfg, meta, args)
    if sizing:
        cfg = RunConfig(model=sizing["model"], data=cfg.data, train=cfg.train)
    print(f"[2/4] train: {cfg.train.max_time:.0f} s budget")
    state = train(out, cfg, progress=progress)
    model, _ = rundir.load_model(out)
    tok = rundir.load_tokenizer(out)
    samples = family_samples(model, tok, cfg.model.family)
    print("[4/4] report")
    summary = write_report(out, cfg, meta, state, samples, model)
    if sizing:  # which rule sized the model, and how far the run landed from its predicted loss
        from llmcycle.scale.sizing import sizing_lines

        with open(rundir.report_path(out), "a", encoding="utf-8") as f:
            f.write("\n" + "\n".join(sizing_lines(sizing, summary["val_loss"], summary["tokens"])))
        summary["sizing"] = {k: v for k, v in sizing.items() if k != "model"}
    atomic_write_text(rundir.summary_path(out), json.dumps(summary, indent=2) + "\n")
    bpb = f", {summary['val_bpb']:.3f} bits/byte" if summary["val_bpb"] is not None else ""
    print(f"done: {rundir.report_path(out)}  (val loss {summary['val_loss']:.3f}{bpb})")
    return summary
