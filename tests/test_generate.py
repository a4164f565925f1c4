"""Sampling as a pure function, and the generation engine: cache parity, padding, stops, seeds."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from llmcycle.data.tokenizer import byte_tokenizer
from llmcycle.inference.generate import GenerationConfig, fit_prompt, generate, generate_ids
from llmcycle.inference.sampling import SamplingConfig, filter_top_k, filter_top_p, sample_next
from llmcycle.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_model(vocab_size=byte_tokenizer().vocab_size)).eval()


def test_temperature_zero_is_argmax():
    logits = torch.randn(16, 50)
    assert torch.equal(sample_next(logits, SamplingConfig(temperature=0)), logits.argmax(-1))


def test_top_k_never_leaves_the_k_most_likely():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 100)
    allowed = logits.topk(5, dim=-1).indices
    for _ in range(200):
        tok = sample_next(logits, SamplingConfig(temperature=2.0, top_k=5), g)
        assert all(t in allowed[i] for i, t in enumerate(tok.tolist()))
    assert torch.isfinite(filter_top_k(logits, 5)).sum(-1).eq(5).all()


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = torch.isfinite(filter_top_p(logits, 0.8))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.8
    assert torch.isfinite(filter_top_p(logits, 0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_top_p(logits, 0.01)).tolist() == [[True, False, False, False]]  # at least one


def test_top_p_sampling_frequencies_follow_renormalised_mass():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(4000, 1)
    tok = sample_next(logits, SamplingConfig(temperature=1.0, top_p=0.8), g)
    counts = torch.bincount(tok, minlength=4).float() / 4000
    assert counts[2:].sum() == 0
    assert abs(counts[0].item() - 0.5 / 0.8) < 0.03


def test_cached_and_uncached_generation_agree(model):
    prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8], [3] * 12]
    greedy = SamplingConfig(temperature=0)
    assert generate_ids(model, prompts, 12, greedy) == generate_ids(model, prompts, 12, greedy, use_cache=False)
    s = SamplingConfig(temperature=1.0, top_k=20)
    a = generate_ids(model, prompts, 12, s, torch.Generator().manual_seed(3))
    b = generate_ids(model, prompts, 12, s, torch.Generator().manual_seed(3), use_cache=False)
    assert a == b


def test_fixed_shape_step_equals_forward():
    """DecoderLM.step (slot-addressed cache, mask over every slot) gives forward's logits, padding included."""
    from llmcycle.inference.batching import left_pad
    from llmcycle.inference.kv_cache import KVCache

    torch.manual_seed(0)
    m = build_model(tiny_model(n_kv_head=2)).eval()  # rope + GQA
    idx, pad, pos = left_pad([[1, 2, 3, 4, 5], [7, 8]], 0, "cpu")
    pad = torch.cat([pad, torch.zeros(2, 6, dtype=torch.bool)], 1)  # (B, 11): the slots to come
    a, b = (KVCache(2, 2, 2, 8, 11, "cpu", torch.float32) for _ in range(2))
    with torch.inference_mode():
        m(idx, cache=a, pos=pos, pad=pad)
        m(idx, cache=b, pos=pos, pad=pad)
        nxt, last = torch.tensor([[9], [10]]), pos[:, -1:]
        for n in range(1, 7):
            eager = m(nxt, cache=a, pos=last + n, pad=pad)[0]
            fixed = m.step(nxt, last + n, b, torch.tensor([4 + n]), pad)
            assert torch.allclose(eager, fixed, atol=1e-5), n
            nxt = eager[:, -1].argmax(-1, keepdim=True)


def test_compiled_decoding_gives_the_eager_tokens():
    torch.manual_seed(0)
    m = build_model(tiny_model(n_kv_head=2)).eval()
    prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8], [3] * 12]
    greedy = SamplingConfig(temperature=0)
    assert generate_ids(m, prompts, 12, greedy, compile=True) == generate_ids(m, prompts, 12, greedy)
    s = SamplingConfig(temperature=1.0, top_k=20)
    sampled = [generate_ids(m, prompts[:1], 20, s, torch.Generator().manual_seed(3), compile=c) for c in (True, False)]
    assert sampled[0] == sampled[1]  # another prompt length and batch: the same compiled graph (dynamic shapes)
    with pytest.raises(ValueError, match="compile needs the KV cache"):
        GenerationConfig(compile=True, use_cache=False)


def test_compiled_decoding_runs_the_ahead_of_time_step():
    """--compile decodes through the AOTInductor step (not the torch.compile fallback): one build per batch
    size serves every cache length, it gives eager's greedy tokens (rope + GQA, left padding) and it
    writes the same keys/values into the cache; its package's temporary directory is gone once loaded."""
    import glob
    import tempfile

    from llmcycle.inference import aot
    from llmcycle.inference.kv_cache import KVCache

    leftovers = lambda: set(glob.glob(f"{tempfile.gettempdir()}/llmcycle-aot-*"))  # noqa: E731
    before = leftovers()
    torch.manual_seed(0)
    m = build_model(tiny_model(n_kv_head=2)).eval()
    greedy = SamplingConfig(temperature=0)
    for prompts, n in (([[1, 2, 3]], 9), ([[5] * 7], 20), ([[4, 5, 6, 7], [8]], 6)):
        assert generate_ids(m, prompts, n, greedy, compile=True) == generate_ids(m, prompts, n, greedy)
    assert sorted(b for b, _ in aot._BUILT[m]) == [1, 2] and not getattr(m, "_aot_failed", None)
    assert leftovers() <= before
    step = aot.aot_step(m, 1, torch.float32)
    caches = [KVCache(2, 1, 2, 8, 10, "cpu", torch.float32) for _ in range(2)]
    with torch.inference_mode():
        for c in caches:
            m(torch.tensor([[1, 2, 3]]), cache=c)
        eager = m(torch.tensor([[4]]), cache=caches[0])[0]
        ahead = step(torch.tensor([[4]]), torch.tensor([1]), torch.tensor([2]), torch.tensor([[2]]),
                     torch.zeros(1, 10, dtype=torch.bool), caches[1].k, caches[1].v)
    assert torch.allclose(eager, ahead, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(caches[0].k + caches[0].v, caches[1].k + caches[1].v))


def test_compile_without_a_cxx_compiler_is_a_clear_error():
    import torch._inductor.config as inductor

    torch.manual_seed(0)
    m = build_model(tiny_model(n_layer=1)).eval()
    # no compiler, and no reuse of an earlier build; the config's own patch restores both afterwards
    with inductor.patch({"cpp.cxx": ("no-such-c++-compiler",), "fx_graph_cache": False}):
        with pytest.raises(ValueError, match="needs a working C.. compiler"):
            generate_ids(m, [[1, 2, 3]], 4, SamplingConfig(temperature=0), compile=True)


def test_batched_generation_equals_one_prompt_at_a_time(model):
    prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8], [3] * 12]
    greedy = SamplingConfig(temperature=0)
    together = generate_ids(model, prompts, 10, greedy)
    assert together == [generate_ids(model, [p], 10, greedy)[0] for p in prompts]


def test_one_seed_gives_one_text_and_other_seeds_differ(model):
    tok = byte_tokenizer()
    def cfg(seed):
        return GenerationConfig(max_new_tokens=40, sampling=SamplingConfig(temperature=1.5), seed=seed)

    a = generate(model, tok, ["hello"], cfg(7))[0].text
    assert a == generate(model, tok, ["hello"], cfg(7))[0].text
    assert any(generate(model, tok, ["hello"], cfg(s))[0].text != a for s in (8, 9, 10))


def test_stop_string_cuts_completion_and_streaming_matches(model):
    tok = byte_tokenizer()
    base = generate(model, tok, ["abc"], GenerationConfig(max_new_tokens=30, sampling=SamplingConfig(0)))[0]
    assert len(base.text) >= 6
    stop = base.text[3:5]
    pieces = []
    out = generate(model, tok, ["abc"], GenerationConfig(max_new_tokens=30, sampling=SamplingConfig(0), stop=[stop]),
                   on_text=lambda r, p: pieces.append(p))[0]
    assert out.finish_reason == "stop" and out.text == base.text[: base.text.index(stop)]
    assert "".join(pieces).startswith(out.text)


def test_num_samples_and_finish_reason_length(model):
    tok = byte_tokenizer()
    outs = generate(model, tok, ["x", "yy"], GenerationConfig(max_new_tokens=5, num_samples=3, seed=0))
    assert [o.prompt for o in outs] == ["x"] * 3 + ["yy"] * 3
    assert all(o.finish_reason in ("length", "eos") and len(o.tokens) <= 5 for o in outs)


def test_prompt_longer_than_context_errors_or_truncates_left():
    with pytest.raises(ValueError, match="context is 8"):
        fit_prompt(list(range(20)), 8, 4, "error")
    assert fit_prompt(list(range(20)), 8, 4, "left") == list(range(13, 20))
    with pytest.raises(ValueError, match="empty prompt"):
        fit_prompt([], 8, 4, "error")


@pytest.mark.parametrize("kw", [{"temperature": -1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}])
def test_bad_sampling_settings_are_clear_errors(kw):
    with pytest.raises(ValueError):
        SamplingConfig(**kw)


def test_sampling_frequencies_follow_the_softmax_and_never_draw_a_banned_token():
    """The inverse-CDF draw of `sample_next`: frequencies match softmax(logits / T); -inf never comes."""
    g = torch.Generator().manual_seed(1)
    logits = torch.tensor([[2.0, 1.0, float("-inf"), 0.0, float("-inf")]]).repeat(20000, 1)
    tok = sample_next(logits, SamplingConfig(temperature=0.5), g)
    counts = torch.bincount(tok, minlength=5).float() / 20000
    want = (logits[0] / 0.5).softmax(-1)
    assert counts[2] == 0 and counts[4] == 0
    assert torch.allclose(counts, want, atol=0.01)
