"""The decoder and its layer library: shapes, masks, GQA, KV-cache parity, accounting."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from llmcycle.config import ModelConfig
from llmcycle.inference.kv_cache import KVCache
from llmcycle.models import build_model
from llmcycle.models.accounting import count_params, flops_per_token, measure_flops, param_groups


def _cache(cfg, B, n):
    return KVCache(cfg.n_layer, B, cfg.kv_heads, cfg.hd, n, torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("kw", [
    {}, {"n_kv_head": 2}, {"n_kv_head": 1}, {"pos_emb": "learned", "norm": "layernorm", "mlp": "gelu_tanh", "bias": True},
    {"tie_embeddings": False, "mlp": "gelu"},
])
def test_cached_logits_equal_full_forward(kw):
    torch.manual_seed(0)
    cfg = tiny_model(**kw)
    model = build_model(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 24))
    with torch.no_grad():
        full, _ = model(idx)
        cache = _cache(cfg, 2, 24)
        parts = [model(idx[:, :10], cache=cache)[0], model(idx[:, 10:13], cache=cache)[0]]
        parts += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(13, 24)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)


def test_causality_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    cfg = tiny_model()
    model = build_model(cfg).eval()
    a = torch.randint(0, cfg.vocab_size, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 7) % cfg.vocab_size
    with torch.no_grad():
        la, lb = model(a)[0], model(b)[0]
    torch.testing.assert_close(la[:, :10], lb[:, :10])
    assert not torch.allclose(la[:, 10:], lb[:, 10:])


def test_left_padded_batch_matches_unpadded_rows():
    from llmcycle.inference.batching import left_pad, positions

    torch.manual_seed(0)
    cfg = tiny_model(n_kv_head=2)
    model = build_model(cfg).eval()
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12]]
    idx, pad, pos = left_pad(prompts, 0, "cpu")
    with torch.no_grad():
        batched, _ = model(idx, pos=pos, pad=pad)
        for i, p in enumerate(prompts):
            alone, _ = model(torch.tensor([p]))
            torch.testing.assert_close(batched[i, -len(p):], alone[0], atol=1e-5, rtol=0)
    assert positions(pad).tolist() == pos.tolist()


def test_loss_is_cross_entropy_and_ignores_minus_100():
    torch.manual_seed(0)
    cfg = tiny_model()
    model = build_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 8))
    tgt = idx.roll(-1, 1)
    logits, loss = model(idx, tgt)
    manual = torch.nn.functional.cross_entropy(logits.view(-1, cfg.vocab_size), tgt.view(-1))
    torch.testing.assert_close(loss, manual)
    tgt[:, 4:] = -100
    _, part = model(idx, tgt)
    torch.testing.assert_close(part, torch.nn.functional.cross_entropy(logits[:, :4].reshape(-1, cfg.vocab_size),
                                                                         tgt[:, :4].reshape(-1)))


def test_tied_embeddings_share_storage_and_untied_do_not():
    tied = build_model(tiny_model())
    assert tied.head.weight.data_ptr() == tied.embed.tok.weight.data_ptr()
    untied = build_model(tiny_model(tie_embeddings=False))
    assert untied.head.weight.data_ptr() != untied.embed.tok.weight.data_ptr()
    assert param_groups(untied)["head"] == 300 * 32 and param_groups(tied)["head"] == 0


def test_init_scales_residual_projections():
    cfg = ModelConfig(vocab_size=512, n_layer=8, d_model=256, n_head=4)
    model = build_model(cfg)
    std_q = model.blocks[0].attn.qkv_proj.weight.std().item()
    std_o = model.blocks[0].attn.o_proj.weight.std().item()
    assert abs(std_q - 0.02) < 0.002
    assert abs(std_o - 0.02 / 4) < 0.001  # 1/sqrt(2 * 8 layers)


def test_param_count_matches_12_L_d2_formula():
    # GPT-style: gelu MLP 4d, no bias, learned positions, tied head: 12 L d^2 + V d + T d + norms
    L, d, V, T = 4, 128, 1000, 64
    cfg = ModelConfig(vocab_size=V, n_layer=L, d_model=d, n_head=4, max_seq_len=T, mlp="gelu", pos_emb="learned",
                      norm="layernorm")
    counts = count_params(cfg)
    norms = (2 * L + 1) * d
    assert counts["total"] == 12 * L * d * d + V * d + T * d + norms
    assert counts["attention"] + counts["mlp"] == 12 * L * d * d


def test_flops_per_token_match_flop_counter_within_5_percent():
    torch.manual_seed(0)
    for kw in ({}, {"n_kv_head": 1, "tie_embeddings": False}, {"mlp": "gelu", "pos_emb": "learned"}):
        cfg = tiny_model(**kw)
        T = cfg.max_seq_len
        model = build_model(cfg)
        idx = torch.randint(0, cfg.vocab_size, (2, T))
        measured = measure_flops(model, idx, idx) / (2 * T)
        predicted = flops_per_token(cfg, T, model)
        assert abs(measured - predicted) / measured < 0.05, (kw, measured, predicted)


def test_analytic_6N_plus_attention_formula():
    cfg = ModelConfig(vocab_size=1000, n_layer=3, d_model=96, n_head=3, max_seq_len=50, tie_embeddings=False)
    n_matmul = count_params(cfg)["total"] - 1000 * 96 - count_params(cfg)["norm"]  # all but input embedding, norms
    assert flops_per_token(cfg, 50) == 6 * n_matmul + 12 * 3 * 96 * 50


def test_position_past_context_is_a_clear_error():
    cfg = tiny_model(max_seq_len=8)
    with pytest.raises(ValueError, match="past the model context"):
        build_model(cfg)(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("kw,msg", [
    ({"d_model": 30, "n_head": 4}, "not divisible"), ({"n_kv_head": 3}, "must be > 0 and divide"),
    ({"family": "gpt"}, "family"), ({"mlp": "relu"}, "mlp"), ({"n_decoder_layer": 2}, "seq2seq"),
])
def test_impossible_configs_are_clear_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        tiny_model(**kw)


@pytest.mark.parametrize("tie", [True, False])
def test_load_weights_restores_every_tensor_and_names_what_does_not_fit(tmp_path, tie):
    from safetensors.torch import save_file, save_model

    from llmcycle.checkpoint import load_weights

    torch.manual_seed(0)
    src = build_model(tiny_model(tie_embeddings=tie))
    save_model(src, str(tmp_path / "w.safetensors"))
    dst = build_model(tiny_model(tie_embeddings=tie))
    load_weights(dst, tmp_path / "w.safetensors")
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), name
    if tie:
        assert dst.head.weight.data_ptr() == dst.embed.tok.weight.data_ptr()  # still one tensor
    with pytest.raises(ValueError, match=r"blocks.0.mlp.down_proj.weight is \(32, 128\) in the file, \(32, 256\)"):
        load_weights(build_model(tiny_model(tie_embeddings=tie, d_ff=256)), tmp_path / "w.safetensors")
    partial = {k: v.contiguous() for k, v in src.state_dict().items() if k != "norm.weight" and k != "head.weight"}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['norm.weight'"):
        load_weights(dst, tmp_path / "partial.safetensors")
