"""`llmcycle eval`: zero/one/few-shot evaluation of a run or a Hugging Face model on a task.

    llmcycle eval --run RUN --task sst2 --shots 0,1,4 --limit 200
    llmcycle eval --run RUN --task dialogsum --shots 0,1,2 --limit 100 --sweep
    llmcycle eval --hf ./flan-t5-small --task dialogsum --shots 0,1 --out results/
    llmcycle eval --run RUN --task sst2 --chat     (prompts as user turns of the chat template)
    llmcycle eval --task my_task.json ...          (a task file: see docs/eval.md)

Writes the task's JSON results (per example: prompt, completion, reference, score) and a Markdown
page beside it (table + side by side) into the run's eval folder (`rundir.eval_path`), or into --out;
prints the table. The sampling flags (--temperature, --top-k, --top-p) are the ones every decoding
verb shares (`inference/cli.add_generation_arguments`), with the same defaults (greedy).
"""

from __future__ import annotations

import argparse

from llmcycle.evaluation.icl import SWEEP, EvalConfig, evaluate_task
from llmcycle.evaluation.results import results_path, side_by_side, table, write
from llmcycle.evaluation.tasks import SHIPPED, load_task
from llmcycle.inference.cli import QUANTIZE, add_generation_arguments, sampling_config
from llmcycle.inference.config import SamplingConfig

# GenerationConfig fields eval does not take: answer length and stop strings come from the task,
# --seed seeds the exemplars too, and --compile is eval's own (llmcycle decoder runs only)
NOT_EVAL = ("max_new_tokens", "seed", "num_samples", "truncate", "use_cache", "stop_at_eos", "compile", "stop")


def _shots(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shots takes comma-separated counts such as 0,1,5, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", help="llmcycle run directory (trained or imported; any family)")
    src.add_argument("--hf", help="Hugging Face model folder, or a hub name when online "
                                  "(AutoModelForCausalLM / AutoModelForSeq2SeqLM)")
    p.add_argument("--task", help="dialogsum | sst2 | agnews | gsm8k, or a task JSON file")
    p.add_argument("--list-tasks", action="store_true", help="list the shipped tasks and exit")
    p.add_argument("--shots", type=_shots, default=[0, 1, 5], help="shot counts, comma-separated")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N items (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seeds the exemplar draws and sampling")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass")
    p.add_argument("--data-dir", default=None, help="folder that relative data paths resolve against "
                                                    "(None: $LLMCYCLE_DATA or the nearest shared/data)")
    p.add_argument("--out", default=None, help="output folder (None: RUN/eval; required with --hf)")
    p.add_argument("--show", type=int, default=3, help="examples in the side-by-side view")
    p.add_argument("--chat", action="store_true",
                   help="send each prompt as one user turn of the model's chat template (instruction-tuned decoders)")
    p.add_argument("--system", default=None, help="system message for --chat")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="weights and activations (bfloat16 roughly halves CPU time; scores are computed in float32)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (None: torch's choice; on a busy machine 1 can be much faster)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--quantize", choices=QUANTIZE, default=None,
                   help="llmcycle runs: weight-only int8/int4 linear layers (faster on a CPU, approximate)")
    p.add_argument("--compile", action="store_true",
                   help="llmcycle decoder runs: generate through the compiled decoding step (compiles once, ~20-50 s)")
    add_generation_arguments(p, skip=NOT_EVAL)
    g = p.add_argument_group("generation (generate tasks)")
    g.add_argument("--max-new-tokens", type=int, default=None, help="answer length (None: the task's)")
    g.add_argument("--sweep", action="store_true",
                   help="score under greedy and temperature 0.7 (top-k 40), 1.0 and 1.5 (top-p 0.9)")
    g.add_argument("--settings", nargs="+", default=None, metavar="SETTING",
                   help="explicit settings instead, e.g. greedy 't=0.7,k=40' 't=1.0,p=0.9'")


def run(args) -> int:
    from llmcycle.evaluation.adapters import load_adapter  # torch: only when the verb runs

    if args.list_tasks:
        for name, d in SHIPPED.items():
            print(f"{name:10s} {d['kind']:8s} {d['metric']:11s} {d['description']}")
        return 0
    if not args.task:
        raise ValueError("give --task (dialogsum, sst2, agnews, gsm8k or a task JSON file); --list-tasks lists them")
    if args.run is None and args.hf is None:
        raise ValueError("give the model: --run DIR (llmcycle) or --hf PATH_OR_NAME (Hugging Face)")
    if args.hf is not None and args.out is None:
        raise ValueError("--hf has no run directory to write into: give --out DIR")
    if args.settings:
        settings = [SamplingConfig.parse(s) for s in args.settings]
    elif args.sweep:
        settings = list(SWEEP)
    else:
        settings = [sampling_config(args)]
    task = load_task(args.task)
    cfg = EvalConfig(shots=args.shots, limit=args.limit, seed=args.seed, batch_size=args.batch_size,
                     settings=settings, max_new_tokens=args.max_new_tokens, progress=not args.quiet)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch  # torch-free until here (`--list-tasks` and argument errors stay fast)

        torch.set_num_threads(args.threads)
    adapter = load_adapter(run=args.run, hf=args.hf, device=args.device, dtype=args.dtype, chat=args.chat,
                           system=args.system, quantize=args.quantize, compile=args.compile)
    result = evaluate_task(task, adapter, cfg, data_dir=args.data_dir)
    js, md = write(result, results_path(task.name, run=args.run, out=args.out), args.show)
    print(f"{task.name}: {result['model']}, context {result['context']}\n")
    print(table(result))
    if args.show:
        print("\n" + side_by_side(result, args.show))
    print(f"wrote {js} and {md}")
    return 0
