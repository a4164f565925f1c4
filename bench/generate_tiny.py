"""Benchmark: decoding speed at batch 1 on the nanoGPT Shakespeare shape with 512 positions.

    .venv/bin/python bench/generate_tiny.py [--new-tokens 500] [--threads 2]

Four engines on models of the same shape (4 layers, 4 heads, width 128, vocabulary 65,
512 positions), each generating 500 new tokens greedily from a 1-token prompt:
  llmcycle (KV cache)        our engine: static KV cache, one forward of 1 token per step
  llmcycle (compiled)        the same decoding through the torch.compile'd fixed-shape step
                             (`generate --compile`; compilation is in the warm-up, timed apart)
  llmcycle (no cache)        the same model recomputing the whole context every token
                             (what nanoGPT's `generate` does)
  transformers GPT-2         `GPT2LMHeadModel.generate` with its own cache
Prints tokens/s for each, the ratios, and peak resident memory. Weights are random: speed does
not depend on them (the same number of tokens is always produced: no eos).
"""

from __future__ import annotations

import argparse
import time

import torch

from llmcycle.config import ModelConfig
from llmcycle.inference.generate import generate_ids
from llmcycle.inference.sampling import SamplingConfig
from llmcycle.models import build_model
from llmcycle.runtime import peak_rss_mb


def timed(fn, repeats: int, warmups: dict | None = None, name: str = "") -> float:
    t0 = time.perf_counter()
    fn()  # warm-up (and compilation)
    if warmups is not None:
        warmups[name] = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--new-tokens", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.new_tokens
    cfg = ModelConfig(vocab_size=65, n_layer=4, n_head=4, d_model=128, max_seq_len=512, pos_emb="learned",
                      norm="layernorm", mlp="gelu", tie_embeddings=True)
    model = build_model(cfg).eval()
    greedy = SamplingConfig(temperature=0)
    prompt = [[0]]
    warmups: dict[str, float] = {}
    results = {
        "llmcycle (KV cache)": timed(lambda: generate_ids(model, prompt, n, greedy), args.repeats),
        "llmcycle (compiled)": timed(lambda: generate_ids(model, prompt, n, greedy, compile=True), args.repeats,
                                     warmups, "compile"),
        "llmcycle (no cache)": timed(lambda: generate_ids(model, prompt, n, greedy, use_cache=False), 1),
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

        results["transformers GPT-2 generate"] = timed(hf_generate, args.repeats)
    except ImportError:
        print("transformers not installed: skipping its baseline")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch 1, {n} new tokens, greedy")
    for name, s in results.items():
        print(f"{name:30s} {n / s:8,.0f} tokens/s  ({s * 1000 / n:.2f} ms/token)")
    for ours in ("llmcycle (KV cache)", "llmcycle (compiled)"):
        for name, s in results.items():
            if name != ours and not (ours.endswith("(compiled)") and name == "llmcycle (no cache)"):
                print(f"{ours} vs {name}: {results[name] / results[ours]:.2f}x")
    print(f"first compiled generation (compiling included): {warmups['compile']:.1f} s")
    print(f"peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
