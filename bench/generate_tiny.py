"""Benchmark: decoding speed at batch 1 on the nanoGPT Shakespeare shape with 512 positions.

    .venv/bin/python bench/generate_tiny.py [--new-tokens 500] [--threads 2] [--rounds 5]

Four engines on models of the same architecture (GPT-2: 4 layers, 4 heads, width 128, vocabulary
65, 512 positions, learned positions, LayerNorm, tanh-GELU as GPT-2's `gelu_new`, tied head), each
generating 500 new tokens greedily from a 1-token prompt, through the product's `generate_ids`:
  llmcycle (KV cache)        static KV cache, one eager forward of 1 token per step
  llmcycle (compiled)        `generate --compile`: the step compiled ahead of time (AOTInductor,
                             inference/aot.py); building it is the warm-up, timed apart
  llmcycle (no cache)        recomputing the whole context every token (what nanoGPT's `generate` does)
  transformers GPT-2         `GPT2LMHeadModel.generate` with its own cache
The engines run in interleaved rounds in this one process (the machine is shared): per engine the
min and median over rounds of wall-clock ms/token, and the CPU ms/token of its fastest round (with
one thread, what an unshared core takes). Ratios are taken from the same run; the thread count and
the load average are printed. Weights are random: speed does not depend on them (no eos).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from llmcycle.config import ModelConfig
from llmcycle.inference.generate import generate_ids
from llmcycle.inference.sampling import SamplingConfig
from llmcycle.models import build_model
from llmcycle.runtime import peak_rss_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--new-tokens", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of every engine (default: 5)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.new_tokens
    cfg = ModelConfig(vocab_size=65, n_layer=4, n_head=4, d_model=128, max_seq_len=512, pos_emb="learned",
                      norm="layernorm", mlp="gelu_tanh", tie_embeddings=True)
    model = build_model(cfg).eval()
    greedy = SamplingConfig(temperature=0)
    prompt = [[0]]
    engines = {
        "llmcycle (KV cache)": lambda: generate_ids(model, prompt, n, greedy),
        "llmcycle (compiled)": lambda: generate_ids(model, prompt, n, greedy, compile=True),
        "llmcycle (no cache)": lambda: generate_ids(model, prompt, n, greedy, use_cache=False),
    }
    try:
        from transformers import GPT2Config, GPT2LMHeadModel

        hf = GPT2LMHeadModel(GPT2Config(vocab_size=65, n_positions=512, n_embd=128, n_layer=4, n_head=4,
                                        bos_token_id=0, eos_token_id=None, pad_token_id=0)).eval()
        ids = torch.tensor(prompt)

        def hf_generate():
            with torch.inference_mode():
                out = hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  attention_mask=torch.ones_like(ids))
            assert out.shape[1] == n + 1

        engines["transformers GPT-2 generate"] = hf_generate
    except ImportError:
        print("transformers not installed: skipping its baseline")
    setup = {}
    for name, fn in engines.items():  # warm-up: allocator, lazy init, and the compiled step's build
        t0 = time.perf_counter()
        fn()
        setup[name] = time.perf_counter() - t0
    same = generate_ids(model, prompt, n, greedy, compile=True) == generate_ids(model, prompt, n, greedy)
    wall: dict[str, list[float]] = {k: [] for k in engines}
    cpu: dict[str, float] = {}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for name, fn in engines.items():
            if name == "llmcycle (no cache)" and r:  # ~10x slower: one round is enough
                continue
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            w, c = (time.perf_counter() - w0) / n, (time.process_time() - c0) / n
            if not wall[name] or w < min(wall[name]):
                cpu[name] = c
            wall[name].append(w)
        loads.append(os.getloadavg()[0])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch 1, {n} new tokens, greedy; "
          f"{args.rounds} interleaved rounds; load average {min(loads):.1f}-{max(loads):.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"{'engine':30s} {'tokens/s':>9s} {'ms/token min':>13s} {'median':>7s} {'CPU ms/token':>13s}")
    for name, ws in wall.items():
        print(f"{name:30s} {1 / min(ws):9,.0f} {min(ws) * 1e3:13.3f} {statistics.median(ws) * 1e3:7.3f} "
              f"{cpu[name] * 1e3:13.3f}")
    hf_name = "transformers GPT-2 generate"
    for ours in ("llmcycle (KV cache)", "llmcycle (compiled)"):
        for name in wall:
            if name != ours and not (ours.endswith("(compiled)") and name == "llmcycle (no cache)"):
                print(f"{ours} vs {name}: {min(wall[name]) / min(wall[ours]):.2f}x (min), "
                      f"{statistics.median(wall[name]) / statistics.median(wall[ours]):.2f}x (median), "
                      f"{cpu[name] / cpu[ours]:.2f}x (CPU time)")
    if hf_name in wall:
        print("goals: eager >= 3x transformers, compiled >= 5x (min wall-clock ratios above)")
    print(f"compiled greedy tokens equal eager's: {same}")
    print(f"first compiled generation (building the step included): {setup['llmcycle (compiled)']:.1f} s")
    print(f"peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
