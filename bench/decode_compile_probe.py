"""Probe: would `torch.compile` of a fixed-shape decode step make batch-1 decoding much faster?

    .venv/bin/python bench/decode_compile_probe.py

Writes the decoder's one-token step out by hand for the bench/generate_tiny.py shape (4 layers,
4 heads, width 128, 512 positions) with a fixed-size KV cache written by `index_copy_` and a mask
over all 512 slots, so every step has the same shapes; runs it eagerly and compiled (inductor,
fullgraph, static shapes) for 500 greedy tokens and prints ms/token and the compile time. This is
an experiment kept to make the README's claim rerunnable, not a code path of the engine.
"""

import time

import torch
import torch.nn.functional as F
from llmcycle.config import ModelConfig
from llmcycle.models import build_model
torch.set_num_threads(2)
cfg = ModelConfig(vocab_size=65, n_layer=4, n_head=4, d_model=128, max_seq_len=512, pos_emb="learned", norm="layernorm", mlp="gelu")
m = build_model(cfg).eval()
L, H, D, S = 4, 4, 32, 512
K = [torch.zeros(1, H, S, D) for _ in range(L)]; V = [torch.zeros(1, H, S, D) for _ in range(L)]
def step(tok, pos):  # tok (1,1), pos (1,)
    x = m.embed.tok(tok) + m.embed.pos(pos)
    mask = (torch.arange(S) <= pos)[None, None, None, :]
    for i, b in enumerate(m.blocks):
        a = b.attn
        h = b.attn_norm(x)
        q, k, v = a.qkv_proj(h).split(a.split, -1)
        q = q.view(1, 1, H, D).transpose(1, 2); k = k.view(1, 1, H, D).transpose(1, 2); v = v.view(1, 1, H, D).transpose(1, 2)
        K[i].index_copy_(2, pos, k); V[i].index_copy_(2, pos, v)
        y = F.scaled_dot_product_attention(q, K[i], V[i], attn_mask=mask)
        x = x + a.o_proj(y.transpose(1, 2).reshape(1, 1, H * D))
        x = x + b.mlp(b.mlp_norm(x))
    return m.head(m.norm(x))
cstep = torch.compile(step, fullgraph=True, dynamic=False)
with torch.inference_mode():
    t0 = time.perf_counter(); cstep(torch.zeros(1,1,dtype=torch.long), torch.tensor([0])); print("compile", time.perf_counter()-t0)
    for f, name in ((step, "eager-static"), (cstep, "compiled")):
        tok = torch.zeros(1,1,dtype=torch.long)
        t0 = time.perf_counter()
        for i in range(500):
            logits = f(tok, torch.tensor([i]))
            tok = logits[:, -1].argmax(-1, keepdim=True)
        print(name, (time.perf_counter()-t0)/500*1e3, "ms/tok")
