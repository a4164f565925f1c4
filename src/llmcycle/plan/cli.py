"""`llmcycle plan`: memory, compute and scaling-law planner on the command line.

Mounted by `llmcycle/cli.py` through `add_arguments(parser)` and `run(args)`; also runnable as
`python -m llmcycle.plan.cli --preset gpt3-175b --tokens 300e9`. Prints tables (GB and GiB), or
`--json` with the documented keys of docs/plan.md; `--plot out.png` draws memory per GPU.
"""

from __future__ import annotations

import argparse
import json
import sys

from llmcycle.plan import memory, scaling
from llmcycle.plan.build import Settings, build_plan, json_safe
from llmcycle.plan.compute import PF_DAY, flops_from_gpu_hours, peak_dtype
from llmcycle.plan.hardware import GPUS
from llmcycle.plan.plot import plot_memory
from llmcycle.plan.presets import PRESETS
from llmcycle.plan.shape import FAMILIES, MLPS, NORMS, POS_EMBS
from llmcycle.plan.source import resolve
from llmcycle.plan.tables import render

DIMS = ("layers", "d_model", "heads", "kv_heads", "head_dim", "d_ff", "vocab", "max_seq_len", "family", "mlp",
        "pos_emb", "norm", "n_decoder_layer")


def _flt(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number (e.g. 7.5e9)") from None


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (one of)")
    g.add_argument("--preset", help=f"named model: {', '.join(PRESETS)}")
    g.add_argument("--hf-config", help="a Hugging Face config.json (or its folder)")
    g.add_argument("--run", help="an llmcycle run directory (reads DIR/config.json)")
    g.add_argument("--params", type=_flt, help="just a parameter count, e.g. 7.5e9 (no activations, no KV cache)")
    g.add_argument("--layers", type=int, help="raw dims: number of blocks")
    g.add_argument("--d-model", type=int, help="raw dims: model width")
    g.add_argument("--heads", type=int, help="raw dims: attention (query) heads")
    g.add_argument("--kv-heads", type=int, help="raw dims: key/value heads (grouped-query attention; default = heads)")
    g.add_argument("--head-dim", type=int, help="raw dims: width of one head (default d_model / heads)")
    g.add_argument("--d-ff", "--ffn", dest="d_ff", type=int, help="MLP hidden size (default 4 x d_model)")
    g.add_argument("--vocab", type=int, help="raw dims: vocabulary size")
    g.add_argument("--max-seq-len", "--context", dest="max_seq_len", type=int, help="context length (positions)")
    g.add_argument("--family", choices=FAMILIES, help="raw dims: decoder, encoder or seq2seq")
    g.add_argument("--n-decoder-layer", type=int, help="raw dims, seq2seq: decoder blocks (default = layers)")
    g.add_argument("--mlp", choices=MLPS, help="raw dims: MLP kind (swiglu has three matrices)")
    g.add_argument("--pos-emb", choices=POS_EMBS, help="raw dims: rotary or learned positions")
    g.add_argument("--norm", choices=NORMS, help="raw dims: rmsnorm or layernorm")
    g.add_argument("--untied", action="store_true", help="raw dims: separate output head")
    g.add_argument("--list-presets", action="store_true", help="print the named models and exit")


def add_arguments(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    h = p.add_argument_group("hardware and training")
    h.add_argument("--gpu", default="a100-80gb", help=f"one of {', '.join(GPUS)} (default a100-80gb)")
    h.add_argument("--gpus", type=int, default=8, help="GPUs in the fleet (default 8)")
    h.add_argument("--dtype", default="bf16", help="training precision: fp32, or bf16/fp16 mixed with fp32 master (default bf16)")
    h.add_argument("--grad-dtype", choices=memory.GRAD_DTYPES, default=None,
                   help="gradient precision: fp32 as Megatron-LM/DeepSpeed accumulate them (default: the training dtype)")
    h.add_argument("--optimizer", default="adamw", help=f"one of {', '.join(memory.OPTIMIZER_STATE_BYTES)} (default adamw)")
    h.add_argument("--zero", type=int, choices=(0, 1, 2, 3), help="highlight ZeRO stage (0 = plain DDP); all are tabulated")
    h.add_argument("--strategy", help="or name it: ddp, zero1, zero2, zero3, fsdp-full, fsdp-grad-op")
    h.add_argument("--tp", type=int, default=1, help="tensor-parallel degree")
    h.add_argument("--pp", type=int, default=1, help="pipeline-parallel degree")
    h.add_argument("--sp", action="store_true", help="sequence parallelism with tensor parallelism (Korthikanti)")
    h.add_argument("--batch", type=int, default=1, help="micro-batch per GPU, sequences (default 1)")
    h.add_argument("--seq-len", "--seq", dest="seq_len", type=int,
                   help="training sequence length (default: the run's seq_len, else the model's max_seq_len)")
    h.add_argument("--recompute", default="none", choices=memory.RECOMPUTE,
                   help="activation checkpointing: none; selective (16-bit plans: Korthikanti's, rerun the attention core; "
                        "--dtype fp32: what `train --recompute selective` does, keep matmul and attention outputs, "
                        "rerun norms and activations); full (keep block inputs only)")
    h.add_argument("--no-flash", action="store_true", help="attention scores are materialised (no flash/SDPA kernel)")
    h.add_argument("--reserve-gib", type=float, default=1.0, help="GPU memory kept back for CUDA context etc. (default 1)")
    h.add_argument("--infer-batch", type=int, default=1, help="sequences decoded at once, for the KV-cache figure")
    h.add_argument("--infer-seq-len", "--infer-seq", dest="infer_seq_len", type=int,
                   help="tokens in the inference KV cache (default: the model's max_seq_len)")
    h.add_argument("--list-gpus", action="store_true", help="print the GPU catalogue and exit")
    h.add_argument("--lora-rank", type=int, help="also plan fine-tuning on one GPU: full vs LoRA adapters of this rank")
    h.add_argument("--lora-targets", nargs="+", default=None, metavar="NAME",
                   help="Linear layers LoRA adapts (default: qkv_proj o_proj up_proj down_proj; HF names too: q_proj ...)")
    c = p.add_argument_group("compute and scaling")
    c.add_argument("--tokens", type=_flt, help="training tokens, e.g. 300e9")
    c.add_argument("--budget-flops", type=_flt, help="compute budget in FLOPs, e.g. 5.76e23")
    c.add_argument("--budget-pf-days", type=_flt, help="compute budget in petaflop/s-days")
    c.add_argument("--budget-gpu-hours", type=_flt, help="compute budget in GPU-hours of --gpu at --mfu")
    c.add_argument("--mfu", type=_flt, default=0.4, help="model FLOPs utilisation (default 0.4)")
    c.add_argument("--price", type=_flt, help="price per GPU-hour, for cost")
    c.add_argument("--unique-tokens", type=_flt, help="tokens of data available (data-constrained advice)")
    c.add_argument("--max-epochs", type=_flt, default=4.0, help="most passes over the data (Muennighoff: ~4)")
    c.add_argument("--law", default="chinchilla", choices=scaling.LAWS, help="law for the data advice")
    c.add_argument("--inference-tokens", type=_flt,
                   help="lifetime inference tokens (prompt + generated, all requests): the inference-aware N, D "
                        "(Sardana et al. 2023) beside Chinchilla's for the same loss")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="machine-readable output (schema llmcycle.plan/1)")
    o.add_argument("--plot", help="write a PNG of memory per GPU across strategies")


def _dims(args) -> dict | None:
    d = {k: getattr(args, k, None) for k in DIMS}
    if all(v is None for v in d.values()):
        return None
    d = {k: v for k, v in d.items() if v is not None}
    d["tied"] = not args.untied
    return d


def _budget(args) -> float | None:
    given = [x for x in (args.budget_flops, args.budget_pf_days, args.budget_gpu_hours) if x is not None]
    if len(given) > 1:
        raise ValueError("give one budget: --budget-flops, --budget-pf-days or --budget-gpu-hours")
    if args.budget_pf_days is not None:
        return args.budget_pf_days * PF_DAY
    if args.budget_gpu_hours is not None:
        return flops_from_gpu_hours(args.budget_gpu_hours, args.gpu, peak_dtype(args.gpu, args.dtype), args.mfu)
    return args.budget_flops


POSITIVE = ("tokens", "budget_flops", "budget_pf_days", "budget_gpu_hours", "unique_tokens", "max_epochs", "params",
            "inference_tokens")
MAX_PARAMS = 1e15  # a thousand times the largest dense models trained so far


def check_args(args) -> None:
    """Sizes and rates that cannot be planned for: a ValueError naming the flag."""
    for name in POSITIVE:
        v = getattr(args, name, None)
        if v is not None and not (0 < v < float("inf")):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number, got {v:g}")
    if getattr(args, "params", None) is not None and args.params > MAX_PARAMS:
        raise ValueError(f"--params {args.params:g} is beyond any model that can be planned for (at most {MAX_PARAMS:g})")
    if not 0 < args.mfu <= 1:
        raise ValueError(f"--mfu is a fraction of peak in (0, 1], got {args.mfu:g} (e.g. 0.4)")
    if args.price is not None and not 0 <= args.price < float("inf"):
        raise ValueError(f"--price must be >= 0, got {args.price:g}")


def make_plan(args) -> dict:
    check_args(args)
    info = resolve(args.preset, args.hf_config, args.run, None, args.params, _dims(args))
    strategy = args.strategy or (f"zero{args.zero}" if args.zero is not None else "zero1")
    st = Settings(gpu=args.gpu, gpus=args.gpus, dtype=args.dtype, optimizer=args.optimizer, strategy=strategy, tp=args.tp,
                  pp=args.pp, sp=args.sp, batch=args.batch, seq_len=args.seq_len, recompute=args.recompute, flash=not args.no_flash,
                  tokens=args.tokens, budget_flops=_budget(args), mfu=args.mfu, price=args.price,
                  unique_tokens=args.unique_tokens, max_epochs=args.max_epochs, law=args.law,
                  infer_batch=args.infer_batch, infer_seq_len=args.infer_seq_len, reserve_gib=args.reserve_gib,
                  lora_rank=args.lora_rank, lora_targets=tuple(args.lora_targets) if args.lora_targets else None,
                  grad_dtype=args.grad_dtype, inference_tokens=args.inference_tokens)
    return build_plan(info, st)


def run(args) -> int:
    if args.list_presets:
        for k, p in PRESETS.items():
            print(f"{k:18s} {p.published}{'M' if p.unit == 1e6 else 'B'} params  ({p.source})")
        return 0
    if args.list_gpus:
        for g in GPUS.values():
            print(f"{g.name:14s} {g.memory_gib:g} GiB  bf16 {g.bf16_tflops or '-'} / fp16 {g.fp16_tflops} / "
                  f"fp32 {g.fp32_tflops} TFLOPS dense")
        return 0
    plan = make_plan(args)
    if args.json:
        print(json.dumps(json_safe(plan), indent=2))
    else:
        print(render(plan), end="")
    if args.plot:
        out = plot_memory(plan, args.plot)
        print(f"wrote {out}", file=sys.stderr if args.json else sys.stdout)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="llmcycle plan", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except ValueError as e:
        p.error(str(e))


if __name__ == "__main__":
    sys.exit(main())
