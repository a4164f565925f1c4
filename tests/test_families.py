"""The encoder (masked LM) and encoder-decoder (span corruption) beside the decoder: masks, cached
decoding parity, accounting against analytic counts, fill-mask, seq2seq generation, and all three
families learning on a slice of the default corpus through `train`, the CLI and `llmcycle run`."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from conftest import tiny_model
from llmcycle.cli import main
from llmcycle.config import DataConfig, RunConfig, TrainConfig
from llmcycle.data.objectives import objective_for, raw_length, seq2seq_lengths
from llmcycle.data.tokenizer import byte_tokenizer
from llmcycle.inference.fill_mask import encode_marked, fill_mask
from llmcycle.inference.kv_cache import KVCache
from llmcycle.inference.sampling import SamplingConfig
from llmcycle.inference.seq2seq import encode_input, generate_seq2seq_ids, infill
from llmcycle.models import build_model
from llmcycle.models.accounting import count_params, flops_per_token, measure_flops, param_groups, stack_params
from llmcycle.rundir import config_path

VARIANTS = [{}, {"n_kv_head": 2}, {"pos_emb": "learned", "norm": "layernorm", "mlp": "gelu_tanh", "bias": True},
            {"tie_embeddings": False, "n_kv_head": 1}]
META = {"kind": "byte", "bos_id": 0, "eos_id": 1, "pad_id": 2, "vocab_size": 292}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot to it on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(family, **kw):
    torch.manual_seed(0)
    return build_model(tiny_model(family=family, **kw)).eval()


# ------------------------------------------------------------------ the seam: masks


def test_encoder_sees_both_ways_and_ignores_padding():
    model = _model("encoder", n_kv_head=2)
    a = torch.randint(36, 300, (1, 16))
    b = a.clone()
    b[0, 12] = (b[0, 12] + 7) % 300
    with torch.no_grad():
        assert not torch.allclose(model(a)[0][:, :12], model(b)[0][:, :12])  # a later token changes earlier outputs
        padded = torch.cat([a, torch.full((1, 5), 2)], 1)
        pad = torch.zeros(1, 21, dtype=torch.bool)
        pad[0, 16:] = True
        torch.testing.assert_close(model(padded, pad=pad)[0][:, :16], model(a)[0], atol=1e-5, rtol=0)


def test_seq2seq_decoder_is_causal_and_reads_the_encoder():
    model = _model("seq2seq")
    src, dec = torch.randint(36, 300, (2, 20)), torch.randint(36, 300, (2, 10))
    dec2 = dec.clone()
    dec2[:, 6:] = 5
    src2 = src.clone()
    src2[:, -1] = 7
    with torch.no_grad():
        base = model(src, dec)[0]
        torch.testing.assert_close(model(src, dec2)[0][:, :6], base[:, :6])
        assert not torch.allclose(model(src2, dec)[0][:, 0], base[:, 0])  # even the first target sees the whole input


@pytest.mark.parametrize("kw", VARIANTS)
def test_seq2seq_cached_decoding_equals_full_forward(kw):
    model = _model("seq2seq", n_decoder_layer=3, **kw)
    cfg = model.cfg
    src, dec = torch.randint(36, 300, (2, 20)), torch.randint(36, 300, (2, 12))
    src_pad = torch.zeros(2, 20, dtype=torch.bool)
    src_pad[1, 15:] = True  # the second input is shorter: right padding
    with torch.no_grad():
        full, _ = model(src, dec, src_pad=src_pad)
        memory_kv = model.cross_kv(model.encode(src, src_pad))
        cache = KVCache(cfg.dec_layers, 2, cfg.kv_heads, cfg.hd, 12, torch.device("cpu"), torch.float32)
        parts = [model.decode(dec[:, :5], memory_kv, src_pad, cache), model.decode(dec[:, 5:7], memory_kv, src_pad, cache)]
        parts += [model.decode(dec[:, t:t + 1], memory_kv, src_pad, cache) for t in range(7, 12)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ generation


def test_seq2seq_generation_cached_equals_uncached_and_encodes_once(monkeypatch):
    model = _model("seq2seq", n_kv_head=2)
    inputs = [[40, 41, 42, 43, 44, 45, 4, 46], [50, 4, 51]]
    calls = {"encode": 0}
    real_encode = model.encode

    def counted(*a, **k):
        calls["encode"] += 1
        return real_encode(*a, **k)

    monkeypatch.setattr(model, "encode", counted)
    for sampling in (SamplingConfig(temperature=0), SamplingConfig(temperature=0.9, top_k=40, top_p=0.9)):
        out = [generate_seq2seq_ids(model, inputs, 15, sampling, torch.Generator().manual_seed(3), start_id=0,
                                    use_cache=cache) for cache in (True, False)]
        assert out[0] == out[1] and all(len(r) == 15 for r in out[0])
    assert calls["encode"] == 2 + 2 * 15  # once per cached generation; every step without the cache
    alone = generate_seq2seq_ids(model, inputs[1:], 15, SamplingConfig(temperature=0), start_id=0)
    assert alone[0] == generate_seq2seq_ids(model, inputs, 15, SamplingConfig(temperature=0), start_id=0)[1]


def test_seq2seq_generation_ends_after_the_last_span_the_input_needs(monkeypatch):
    model = _model("seq2seq")
    script = [4, 60, 61, 5, 62, 6, 63, 7, 64, 65, 66, 67]  # sentinel_0 span sentinel_1 span sentinel_2 ...
    steps = []

    def scripted(dec, *args, **kw):  # the decoder's logits, one scripted token per step for every row
        logits = torch.zeros(dec.shape[0], 1, model.cfg.vocab_size)
        logits[:, :, script[len(steps)]] = 1.0
        steps.append(dec.shape[1])
        return logits

    monkeypatch.setattr(model, "decode", scripted)
    one_mask, two_masks = [50, 4, 51], [40, 4, 41, 5, 42]
    greedy = SamplingConfig(temperature=0)
    out = generate_seq2seq_ids(model, [one_mask, two_masks], 12, greedy, start_id=0, eos_id=1, sentinel_ids=[4, 5, 6, 7])
    assert out == [[4, 60, 61, 1], [4, 60, 61, 5, 62, 1]]  # sentinel k ends a row with k masks, read as eos
    assert len(steps) == 6  # the batch stops once every row has ended, not at max_new_tokens
    steps.clear()
    assert len(generate_seq2seq_ids(model, [one_mask], 12, greedy, start_id=0, eos_id=1)[0]) == 12  # no sentinel ids


def test_seq2seq_generation_needs_an_input():
    model = _model("seq2seq")
    with pytest.raises(ValueError, match="seq2seq generation needs an input"):
        generate_seq2seq_ids(model, [[5, 6], []], 4, SamplingConfig())


def test_masks_in_user_text_become_mask_ids_and_sentinels():
    tok = byte_tokenizer()
    assert encode_marked(tok, "a<mask>b<|mask|>", iter([3, 3])) == tok.encode("a") + [3] + tok.encode("b") + [3]
    assert encode_input(tok, "x <mask> y <mask>") == tok.encode("x ") + [4] + tok.encode(" y ") + [5]
    assert infill(tok, "x <mask> y <mask>", [4, *tok.encode("AB"), 5, *tok.encode("C"), 1]) == "x [[AB]] y [[C]]"


def test_fill_mask_ranks_candidates_and_rejects_bad_input():
    tok = byte_tokenizer()
    model = build_model(tiny_model(family="encoder", vocab_size=tok.vocab_size)).eval()
    preds = fill_mask(model, tok, "def f(x):\n    return x <mask> <mask>\n", top_k=3)
    assert [p.index for p in preds] == [0, 1] and all(len(p.candidates) == 3 for p in preds)
    probs = [pr for _, pr in preds[0].candidates]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    with pytest.raises(ValueError, match="needs at least one <mask>"):
        fill_mask(model, tok, "no mask here")
    with pytest.raises(ValueError, match="needs an encoder run"):
        fill_mask(build_model(tiny_model(vocab_size=tok.vocab_size)), tok, "a <mask>")


# ------------------------------------------------------------------ accounting


def _block(cfg, cross=False):
    d, q, kv, f = cfg.d_model, cfg.n_head * cfg.hd, cfg.kv_heads * cfg.hd, cfg.ffn
    attn = d * (q + 2 * kv) + q * d
    return attn + 3 * d * f + 2 * d + ((attn + d) if cross else 0)  # swiglu, rmsnorm, no bias


def test_param_counts_match_the_analytic_formula():
    for family in ("decoder", "encoder", "seq2seq"):
        cfg = tiny_model(family=family, n_kv_head=2, **({"n_decoder_layer": 3} if family == "seq2seq" else {}))
        counts = count_params(cfg)
        blocks = cfg.n_layer * _block(cfg) + (cfg.dec_layers * _block(cfg, cross=True) if family == "seq2seq" else 0)
        norms = cfg.d_model * (2 if family == "seq2seq" else 1)
        assert counts["total"] == cfg.vocab_size * cfg.d_model + blocks + norms, family
        split = stack_params(build_model(cfg))
        assert split["shared"] + split["encoder"] + split["decoder"] == counts["total"]
    assert split["cross_attention"] == 3 * (_block(cfg, True) - _block(cfg) - cfg.d_model)


@pytest.mark.parametrize("family", ["encoder", "seq2seq"])
@pytest.mark.parametrize("kw", VARIANTS[:3])
def test_flops_per_token_match_flop_counter_within_5_percent(family, kw):
    cfg = tiny_model(family=family, **kw)
    model = build_model(cfg)
    obj = objective_for(family, META, cfg)
    batch = obj(torch.randint(36, 292, (2, raw_length(obj, cfg.max_seq_len))), torch.Generator().manual_seed(0))
    measured = measure_flops(model, batch.pop("idx"), batch.pop("targets"), **batch) / (2 * cfg.max_seq_len)
    assert abs(measured - flops_per_token(cfg, cfg.max_seq_len, model)) / measured < 0.05


def test_flops_closed_forms_per_family():
    dec, enc = tiny_model(), tiny_model(family="encoder")
    s2s = tiny_model(family="seq2seq", n_decoder_layer=3)
    T = 64
    assert flops_per_token(enc, T) == flops_per_token(dec, T)  # no mask changes what is seen, not the cost
    S, Tt = seq2seq_lengths(s2s, T)
    d, H, V, f = 32, 32, 300, s2s.ffn
    enc_layer, dec_layer = 4 * d * H + 3 * d * f, 4 * d * H + 3 * d * f + 2 * d * H
    matmul = 2 * (2 * enc_layer * S + 3 * (dec_layer * Tt + 2 * d * H * S) + V * d * Tt)
    scores = 4 * H * (2 * S * S + 3 * (Tt * Tt + Tt * S))
    assert flops_per_token(s2s, T) == 3 * round((matmul + scores) / T)


# ------------------------------------------------------------------ all three learn


@pytest.fixture(scope="module")
def trained(prepared_run, tmp_path_factory):
    """One tiny run per family on ~300 KB of the default corpus: 40 steps, evaluated at 0 and 40."""
    runs = {}
    from llmcycle.train.loop import train

    for family in ("decoder", "encoder", "seq2seq"):
        run = tmp_path_factory.mktemp(family)
        shutil.copytree(prepared_run / "data", run / "data")
        cfg = RunConfig.load(config_path(prepared_run))
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, family=family, max_seq_len=128),
                                  train=dataclasses.replace(cfg.train, max_steps=40, eval_every=40, ckpt_every=40))
        cfg.save(config_path(run))
        runs[family] = (run, train(run, cfg, progress=False))
    return runs


@pytest.mark.parametrize("family", ["decoder", "encoder", "seq2seq"])
def test_every_family_learns(trained, family):
    run, state = trained[family]
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert [e["step"] for e in evals] == [0, 40]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0  # from ~ln(292) = 5.7 down by well over a nat
    assert state.tokens == 40 * 8 * 32


def test_fill_mask_and_seq2seq_generate_from_the_cli(trained, capsys):
    enc, s2s = str(trained["encoder"][0]), str(trained["seq2seq"][0])
    assert main(["fill-mask", "--run", enc, "def f(x):\n    return x <mask> 1\n", "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("%") == 3 and "most likely" in out
    assert main(["fill-mask", "--run", enc, "no mask"]) == 2
    assert "needs at least one <mask>" in capsys.readouterr().err
    args = ["generate", "--run", s2s, "def f(x):\n    return <mask>\n", "--seed", "1", "--max-new-tokens", "8"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0 and capsys.readouterr().out == first and "=> " in first
    assert main(["generate", "--run", s2s, ""]) == 2
    assert "seq2seq generation needs an input" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["encoder", "seq2seq"])
def test_run_family_writes_the_report_with_family_samples(family, tmp_path, monkeypatch, capsys):
    from llmcycle.lifecycle import pipeline as lifecycle

    def tiny(source, budget, max_bytes, family):  # the default run, shrunk to seconds
        return RunConfig(model=tiny_model(family=family, max_seq_len=128),
                         data=DataConfig(tokenizer="byte", max_bytes=max_bytes),
                         train=TrainConfig(seq_len=32, batch_size=8, max_steps=10, max_time=budget, eval_every=10,
                                           eval_batches=2))

    monkeypatch.setattr(lifecycle, "default_config", tiny)
    assert main(["run", "--family", family, "--out", str(tmp_path), "--max-bytes", "100000", "--quiet"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "compute per training token across the families" in report and "bits per byte: not given" in report
    if family == "encoder":
        assert "### fill-mask, top 5" in report and "# most likely:" in report
    else:
        assert "### greedy" in report and "# decoder output:" in report and "stacks: encoder" in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["val_bpb"] is None and f"{summary['params']:,}" in report
    assert param_groups(build_model(RunConfig.load(tmp_path / "config.json").model))["total"] == summary["params"]
