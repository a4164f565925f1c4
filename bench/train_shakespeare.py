"""Benchmark: nanoGPT's documented CPU recipe (character-level Tiny Shakespeare) on llmcycle's model.

    .venv/bin/python bench/train_shakespeare.py                 # both configurations, 2,000 iterations
    .venv/bin/python bench/train_shakespeare.py --only nanogpt --iters 200

Recipe (nanoGPT README, CPU): 65-character vocabulary, first 90% train / last 10% validation,
4 layers, 4 heads, width 128, context 64, batch 12, 2,000 iterations, no dropout, lr 1e-3 -> 1e-4
(cosine, 100 warmup), AdamW beta2 0.99, weight decay 0.1, clip 1.0. nanoGPT measured on this
machine kind: ~66 ms/iteration, 145 s, final validation loss 1.886.

Configurations:
  nanogpt  the same architecture (learned positions, LayerNorm without bias, GELU, tied head)
  rope     nanoGPT's shape and schedule with rotary positions instead of learned ones
  fast     any architecture at the same parameter budget (rope, RMSNorm, SwiGLU) and a schedule
           chosen to reach 1.886 sooner (higher lr, shorter horizon)
  hf-gpt2  Hugging Face GPT2LMHeadModel of the nanoGPT shape trained by the same loop: a
           reference measured in the same run, so ratios do not depend on the machine
Prints ms/iteration (median), tokens/s, wall time, final validation loss on 200 fixed batches,
the wall time at which validation first reached 1.886, and peak resident memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from llmcycle.config import ModelConfig, TrainConfig
from llmcycle.models import build_model
from llmcycle.runtime import peak_rss_mb
from llmcycle.train.optim import build_optimizer, lr_at, set_lr

SHARED = Path(os.environ.get("LLMCYCLE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TARGET = 1.886


def load_chars() -> tuple[torch.Tensor, torch.Tensor, int]:
    path = SHARED / "data" / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        sys.exit(f"{path} not found: this benchmark needs shared/data (set LLMCYCLE_SHARED)")
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))  # the 65 characters of the text are the vocabulary
    ids = torch.tensor(list(text.encode("ascii")), dtype=torch.long)
    lut = torch.full((256,), -1, dtype=torch.long)
    lut[torch.tensor([ord(c) for c in chars])] = torch.arange(len(chars))
    ids = lut[ids]
    n = int(0.9 * len(ids))
    return ids[:n], ids[n:], len(chars)


def get_batch(data: torch.Tensor, B: int, T: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ix = torch.randint(len(data) - T, (B,), generator=g)
    x = torch.stack([data[i:i + T] for i in ix])
    y = torch.stack([data[i + 1:i + 1 + T] for i in ix])
    return x, y


class HFWrapper(torch.nn.Module):
    """GPT2LMHeadModel behind llmcycle's `(logits, loss) = model(idx, targets)` interface."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=128, n_layer=4, n_head=4, resid_pdrop=0,
                         embd_pdrop=0, attn_pdrop=0, attn_implementation="sdpa")
        self.m = GPT2LMHeadModel(cfg)

    def forward(self, idx, targets=None):
        logits = self.m(idx).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss


@torch.no_grad()
def val_loss(model, val: torch.Tensor, batches: int = 200, B: int = 12, T: int = 64) -> float:
    g = torch.Generator().manual_seed(1234)  # the same 200 batches for every configuration
    model.eval()
    losses = [model(*get_batch(val, B, T, g))[1].item() for _ in range(batches)]
    model.train()
    return sum(losses) / len(losses)


def run(name: str, model, tcfg: TrainConfig, iters: int, train, val, eval_every: int) -> dict:
    torch.manual_seed(1337)
    opt = build_optimizer(model, tcfg)
    g = torch.Generator().manual_seed(1337)
    times, reached, t_start = [], None, time.perf_counter()
    eval_time = 0.0
    for it in range(iters):
        t0 = time.perf_counter()
        set_lr(opt, lr_at(it, iters, tcfg))
        x, y = get_batch(train, 12, 64, g)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        if reached is None and eval_every and (it + 1) % eval_every == 0:
            e0 = time.perf_counter()
            if val_loss(model, val, batches=20) <= TARGET:
                reached = time.perf_counter() - t_start - eval_time  # training time only
            eval_time += time.perf_counter() - e0
    wall = time.perf_counter() - t_start - eval_time
    final = val_loss(model, val)
    ms = statistics.median(times) * 1000
    return {"name": name, "params": sum(p.numel() for p in model.parameters()), "ms_per_iter": ms,
            "tok_per_s": 12 * 64 / (ms / 1000), "wall_s": wall, "val_loss": final, "reached_1.886_s": reached}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--only", choices=["nanogpt", "rope", "fast", "hf-gpt2"], action="append")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=100, help="check for the 1.886 crossing every N iterations")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, val, V = load_chars()
    nano_model = ModelConfig(vocab_size=V, n_layer=4, n_head=4, d_model=128, max_seq_len=64, pos_emb="learned",
                             norm="layernorm", mlp="gelu", bias=False, tie_embeddings=True)
    nano_train = TrainConfig(seq_len=64, batch_size=12, lr=1e-3, min_lr_ratio=0.1, warmup_steps=100, beta2=0.99,
                             weight_decay=0.1, grad_clip=1.0, max_steps=args.iters)
    rope_model = dataclasses.replace(nano_model, pos_emb="rope")
    # Same parameter budget: SwiGLU with d_ff = 8/3 d keeps the MLP at 8 d^2 (3 matrices of d x 341 ~ 2 x 4d x d).
    fast_model = ModelConfig(vocab_size=V, n_layer=4, n_head=4, d_model=128, max_seq_len=64, pos_emb="rope",
                             norm="rmsnorm", mlp="swiglu", d_ff=340, tie_embeddings=True)
    fast_train = TrainConfig(seq_len=64, batch_size=12, lr=4e-3, min_lr_ratio=0.1, warmup_steps=50, beta2=0.99,
                             weight_decay=0.1, grad_clip=1.0, max_steps=args.iters)
    configs = {
        "nanogpt": (lambda: build_model(nano_model), nano_train),
        "rope": (lambda: build_model(rope_model), nano_train),
        "fast": (lambda: build_model(fast_model), fast_train),
        "hf-gpt2": (lambda: HFWrapper(V), nano_train),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"{args.iters} iterations, batch 12 x 64")
    results = []
    for name in args.only or ["nanogpt", "rope", "fast", "hf-gpt2"]:
        torch.manual_seed(1337)
        build, tcfg = configs[name]
        r = run(name, build(), tcfg, args.iters, train, val, args.eval_every)
        results.append(r)
        reached = f"{r['reached_1.886_s']:.1f} s" if r["reached_1.886_s"] else "not reached"
        print(f"{name:8s} params {r['params']:,}  {r['ms_per_iter']:.1f} ms/iter  {r['tok_per_s']:,.0f} tok/s  "
              f"wall {r['wall_s']:.1f} s  val loss {r['val_loss']:.4f}  1.886 at {reached}", flush=True)
    by = {r["name"]: r for r in results}
    for name in ("nanogpt", "rope"):
        if name in by:
            print(f"{name} vs nanoGPT's documented 66 ms/iter: {66 / by[name]['ms_per_iter']:.2f}x iterations/s")
    if "nanogpt" in by and "hf-gpt2" in by:
        print(f"vs HF GPT-2 in this run: {by['hf-gpt2']['ms_per_iter'] / by['nanogpt']['ms_per_iter']:.2f}x iterations/s")
    if "fast" in by and by["fast"]["reached_1.886_s"]:
        print(f"fast config reached {TARGET} in {by['fast']['reached_1.886_s']:.1f} s "
              f"= {by['fast']['reached_1.886_s'] / 145:.2f} of nanoGPT's 145 s")
    print(f"peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
