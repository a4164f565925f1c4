"""`llmcycle finetune`: supervised fine-tuning (full or LoRA) of a decoder run, through the training loop.

    llmcycle finetune --run OUT --init-from RUN --data train.jsonl [--method lora --lora-rank 8] --epochs 2
    llmcycle finetune --run OUT --init-from runs/smollm2 --data task:dialogsum --method full --max-steps 100
    llmcycle finetune --run OUT --resume                      (continue exactly from the newest checkpoint)
    llmcycle finetune --run OUT --merge OUT-merged            (a LoRA run -> plain weights for generate/eval/export)

OUT gets config.json (the base architecture; training settings), finetune.json (data, method, LoRA,
and at the end the measured trainable parameters, tokens, time and peak memory), the base run's
tokenizer and prompt files, checkpoints/, metrics.jsonl, and for LoRA adapter.safetensors. Nothing
is written before the data, the base run and the LoRA targets have been checked.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from llmcycle import flags
from llmcycle.atomic import atomic_write_text
from llmcycle.config import RunConfig, TrainConfig
from llmcycle.rundir import (CONFIG, FINETUNE, finetune_path, is_run, latest_checkpoint, load_config, load_tokenizer,
                             save_config, weights_path)

METHODS = ("full", "lora")
# Fine-tuning defaults (where they differ from pretraining's): a small learning rate for full
# fine-tuning, a larger one for the few LoRA weights; no weight decay; short warmup.
DEFAULT_LR = {"full": 5e-5, "lora": 1e-3}
DEFAULTS = {"weight_decay": 0.0, "warmup_steps": 10, "batch_size": 8, "seq_len": 512, "eval_every": 50,
            "ckpt_every": 100, "min_lr_ratio": 0.1}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="output run directory (new, or one to --resume / --merge)")
    p.add_argument("--init-from", dest="base", help="the decoder run to fine-tune (trained or imported)")
    p.add_argument("--data", help="a JSONL file (prompt/completion or chat messages), or task:NAME of `llmcycle eval`")
    p.add_argument("--val-data", help="a separate JSONL file for validation (default: hold out --val-fraction)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="fraction of the examples held out (default: 0.1)")
    p.add_argument("--limit", type=int, default=None, help="use the first N examples of --data (default: all)")
    p.add_argument("--data-dir", default=None, help="where task data resolves (default: $LLMCYCLE_DATA or shared/data)")
    p.add_argument("--prompt-field", default="prompt", help="JSONL field of the prompt (default: prompt)")
    p.add_argument("--completion-field", default="completion", help="JSONL field of the completion (default: completion)")
    p.add_argument("--messages-field", default="messages", help="JSONL field of a chat conversation (default: messages)")
    p.add_argument("--train-on", choices=["completion", "all"], default="completion",
                   help="loss on completion / assistant tokens only, or on every token (default: completion)")
    p.add_argument("--pack", action=argparse.BooleanOptionalAction, default=False,
                   help="pack short examples into full rows, attention kept inside each (default: pad, one per row)")
    p.add_argument("--overlong", choices=["truncate", "skip"], default="truncate",
                   help="examples longer than --seq-len: cut the end (counted, warned) or skip them (default: truncate)")
    p.add_argument("--method", choices=METHODS, default="lora", help="full: every weight; lora: adapters (default)")
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank r (default: 8)")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA scale alpha; updates are scaled alpha/r (default: 16)")
    p.add_argument("--lora-dropout", type=float, default=0.05, help="dropout on the adapters' input (default: 0.05)")
    p.add_argument("--lora-targets", nargs="+", default=None, metavar="NAME",
                   help="Linear layer names to adapt (default: qkv_proj o_proj up_proj down_proj)")
    p.add_argument("--epochs", type=float, default=None, help="budget in passes over the training rows (sets --max-steps)")
    p.add_argument("--resume", action="store_true", help="continue exactly from the newest complete checkpoint")
    p.add_argument("--merge", metavar="DIR", default=None,
                   help="after a LoRA fine-tune (or alone, on a finished one): write DIR, a plain run with the adapters "
                        "folded into the base weights")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    flags.add_dataclass_flags(p, TrainConfig, "training", skip=("init_from",))  # shared with `train`


def _spec_from_args(args) -> dict:
    from llmcycle.finetune.data import DataSpec  # the finetune modules import torch: only when a verb runs
    from llmcycle.finetune.lora import TARGETS, LoraSpec

    data = DataSpec(args.data, args.prompt_field, args.completion_field, args.messages_field, args.train_on,
                    args.overlong, args.limit)
    lora = LoraSpec(args.lora_rank, args.lora_alpha, args.lora_dropout, args.lora_targets or list(TARGETS))
    return {"base": str(args.base), "method": args.method, "data": dataclasses.asdict(data), "val_data": args.val_data,
            "val_fraction": args.val_fraction, "data_dir": args.data_dir, "pack": args.pack,
            "lora": lora.to_dict() if args.method == "lora" else None}


def build_source(spec: dict, cfg, tok_run: Path):
    """Examples -> rows -> the loop's FinetuneBatches; every data error is raised here, before any write."""
    from llmcycle.finetune.data import DataSpec, Rows, load_examples, split  # torch: only when a verb runs
    from llmcycle.finetune.lora import LoraSpec
    from llmcycle.finetune.source import FinetuneBatches, target_bytes_per_token
    from llmcycle.inference.chat import prompt_style

    t = cfg.train
    tok = load_tokenizer(tok_run)
    style = prompt_style(tok_run, tok)
    data = DataSpec(**spec["data"])
    examples, counts = load_examples(data, tok, style, t.seq_len + 1, spec["data_dir"])
    if spec["val_data"]:
        train_ex = examples
        val_ex, vcounts = load_examples(dataclasses.replace(data, source=spec["val_data"], limit=None), tok, style,
                                        t.seq_len + 1, spec["data_dir"])
    else:
        train_ex, val_ex = split(examples, spec["val_fraction"], t.seed)
        vcounts = None
    pad = tok.pad_id if tok.pad_id is not None else tok.eos_id
    train_rows = Rows(train_ex, t.seq_len, spec["pack"], pad, t.seed)
    val_rows = Rows(val_ex, t.seq_len, spec["pack"], pad, t.seed)
    lora = LoraSpec(**spec["lora"]) if spec["method"] == "lora" else None
    source = FinetuneBatches(cfg.model, weights_path(Path(spec["base"])), train_rows, val_rows, lora, t.batch_size,
                             t.seq_len, t.seed, target_bytes_per_token(val_rows, tok))
    notes = [f"data: {counts.describe()}" + (f"; validation: {vcounts.describe()}" if vcounts else "")]
    if counts.truncated:
        notes.append(f"warning: {counts.truncated} example(s) were longer than --seq-len {t.seq_len} and lost their "
                     "end; raise --seq-len or use --overlong skip")
    notes.append(f"{len(train_ex)} training examples in {len(train_rows)} rows ({'packed' if spec['pack'] else 'padded'}), "
                 f"{train_rows.tokens:,} tokens of which {train_rows.targets:,} targets; {len(val_ex)} held out")
    return source, counts, notes


def _check_base(base: Path):
    if not is_run(base):
        raise ValueError(f"--init-from {base}: no {CONFIG} there; give a run directory (trained or imported)")
    cfg = load_config(base)
    if cfg.model.family != "decoder":
        raise ValueError(f"--init-from {base} is a {cfg.model.family} model; `llmcycle finetune` fine-tunes decoder "
                         "(causal LM) runs")
    weights_path(base)  # raises when it has no weights
    return cfg


def run(args) -> int:
    out = Path(args.run)
    if args.merge and not args.data and not args.resume:
        from llmcycle.finetune.source import merge_run  # torch: only when a verb runs

        print(f"merged {out} into {merge_run(out, Path(args.merge))} (plain weights: generate/eval/export read it)")
        return 0
    if args.resume:
        if not finetune_path(out).is_file():
            raise ValueError(f"--resume: {out} is not a fine-tune run (no {FINETUNE})")
        spec = json.loads(finetune_path(out).read_text(encoding="utf-8"))
        cfg = load_config(out)
    else:
        if not args.base or not args.data:
            raise ValueError("give the base model and the data: --init-from RUN --data FILE.jsonl|task:NAME")
        if latest_checkpoint(out) is not None or finetune_path(out).is_file():
            raise ValueError(f"{out} already holds a run; continue it with --resume or choose a new --run")
        base_cfg = _check_base(Path(args.base))
        spec = _spec_from_args(args)
        given = flags.given(args, TrainConfig)
        budget = [k for k in ("max_steps", "max_tokens", "max_time") if given.get(k) is not None]
        if args.epochs is not None and budget:
            raise ValueError(f"give one budget: --epochs or --{budget[0].replace('_', '-')}, not both")
        if args.epochs is None and not budget:
            args.epochs = 1.0  # one pass over the training rows
        train_kw = {**DEFAULTS, "seq_len": min(DEFAULTS["seq_len"], base_cfg.model.max_seq_len),
                    "lr": DEFAULT_LR[args.method], **given}  # base weights: loaded by FinetuneBatches.build_model
        if args.epochs is not None:
            train_kw["max_steps"] = 1  # replaced by the epochs' step count once the rows are known
        cfg = RunConfig(model=base_cfg.model, data=base_cfg.data, train=TrainConfig(**train_kw))
    if cfg.train.strategy != "single":
        raise ValueError("llmcycle finetune runs in one process for now (--strategy single); "
                         "ddp/fsdp fine-tuning is not wired up")
    source, counts, notes = build_source(spec, cfg, Path(spec["base"]))
    from llmcycle.finetune.lora import count_params  # torch: only when a verb runs

    trainable, total = count_params(source.meta_model())  # also: LoRA targets that match nothing raise here
    notes.append(f"{spec['method']} fine-tuning: {trainable:,} trainable of {total:,} parameters "
                 f"({trainable / total:.2%})")
    if not args.resume:
        if args.epochs is not None:
            from llmcycle.finetune.source import steps_for_epochs  # torch: only when a verb runs

            steps = steps_for_epochs(args.epochs, len(source.train), cfg.train.batch_size)
            cfg = RunConfig(model=cfg.model, data=cfg.data, train=dataclasses.replace(cfg.train, max_steps=steps))
        _start_run(out, cfg, spec, source)
    for line in notes:
        print(line)
    return _train(out, cfg, spec, source, args, notes)


def _start_run(out: Path, cfg, spec: dict, source) -> None:
    """Write config, spec and the base's tokenizer files (every input was checked before)."""
    from llmcycle.finetune.source import copy_model_files  # torch: only when a verb runs

    out.mkdir(parents=True, exist_ok=True)
    copy_model_files(Path(spec["base"]), out)
    save_config(out, cfg)
    atomic_write_text(finetune_path(out), json.dumps(spec, indent=2) + "\n")  # last: marks the run as started


def _train(out: Path, cfg, spec: dict, source, args, notes: list[str]) -> int:
    import torch  # torch and the modules that use it: only when a verb runs

    from llmcycle.finetune.lora import count_params
    from llmcycle.finetune.source import merge_run, real_tokens_trained, save_adapter, write_report
    from llmcycle.runtime import peak_rss_mb
    from llmcycle.train.loop import train

    t0 = time.perf_counter()
    torch.manual_seed(cfg.train.seed)  # the adapters' random init, before the loop seeds everything else
    model = source.build_model()
    state = train(out, cfg, resume=args.resume, progress=not args.quiet, batches=lambda run, cfg: source, model=model)
    wall = time.perf_counter() - t0
    trainable, total = count_params(source.model)
    result = {"trainable_params": trainable, "total_params": total, "steps": state.step,
              "tokens_trained": real_tokens_trained(source.train, state.step, cfg.train.batch_size, cfg.train.seed),
              "wall_s": round(wall, 1), "peak_rss_bytes": int(peak_rss_mb() * 2**20), "val_loss": state.val["val_loss"]}
    if spec["method"] == "lora":
        path = save_adapter(out, source.model, source.lora, spec["base"])
        result["adapter_bytes"] = path.stat().st_size
        print(f"adapters: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    atomic_write_text(finetune_path(out), json.dumps({**spec, "result": result}, indent=2) + "\n")
    write_report(out, spec, result, notes)
    print(f"fine-tuned {state.step} steps, {result['tokens_trained']:,} tokens; val loss {result['val_loss']:.4f}; "
          f"{wall:.0f} s, peak memory {result['peak_rss_bytes'] / 2**30:.2f} GiB")
    if args.merge:
        print(f"merged into {merge_run(out, Path(args.merge))}")
    return 0
