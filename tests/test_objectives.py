"""Training objectives as pure, seeded functions: BERT masking and T5 span corruption.

Rates are checked over many draws within statistical tolerance; span corruption must be exactly
invertible, never touch special tokens, and give fixed lengths so batches pack without padding.
"""

from __future__ import annotations

import pytest
import torch

from llmcycle.config import ModelConfig
from llmcycle.data.objectives import (MaskedLM, SpanCorruption, TokenRoles, causal_lm, first_fit_mask, merge_spans,
                                      objective_for, raw_length, raw_length_for, span_lengths, split_spans)
from llmcycle.data.tokenizer import byte_tokenizer

ROLES = TokenRoles.from_tokenizer(byte_tokenizer())  # 292 tokens, ids 0..35 special
META = {"kind": "byte", "bos_id": 0, "eos_id": 1, "pad_id": 2, "vocab_size": 292}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _windows(B: int, L: int, seed: int = 0, special_rate: float = 0.03, specials: int = 36) -> torch.Tensor:
    """Ordinary byte tokens with special tokens (ids below `specials`) sprinkled in."""
    g = _gen(seed)
    x = torch.randint(36, 292, (B, L), generator=g)
    special = torch.rand(B, L, generator=g) < special_rate
    return torch.where(special, torch.randint(0, specials, (B, L), generator=g), x)


def test_roles_from_run_meta_match_the_tokenizer():
    assert TokenRoles.from_meta(META, 292) == ROLES
    assert ROLES.mask_id == 3 and ROLES.sentinel_ids[:2] == (4, 5) and set(range(36)) == set(ROLES.special_ids)


def test_masking_rate_and_80_10_10_split_within_tolerance():
    mlm = objective_for("encoder", META)
    x = _windows(64, 256)
    special = torch.isin(x, torch.tensor(ROLES.special_ids))
    n_ordinary, chosen, masked, kept = 0, 0, 0, 0
    for seed in range(8):
        out = mlm(x, _gen(seed))
        c = out["targets"] != -100
        n_ordinary += int((~special).sum())
        chosen += int(c.sum())
        masked += int((c & (out["idx"] == ROLES.mask_id)).sum())
        kept += int((c & (out["idx"] == x)).sum())
        assert not (c & special).any() and torch.equal(out["idx"][special], x[special])  # specials never chosen
        assert torch.equal(out["targets"][c], x[c])
    # ~125k ordinary tokens, ~19k chosen: the standard errors are ~0.001 and ~0.003
    assert chosen / n_ordinary == pytest.approx(0.15, abs=0.006)
    assert masked / chosen == pytest.approx(0.80, abs=0.015)
    assert kept / chosen == pytest.approx(0.10 + 0.10 / 256, abs=0.01)  # kept, or replaced by itself
    assert (chosen - masked - kept) / chosen == pytest.approx(0.10 - 0.10 / 256, abs=0.01)  # random tokens


def test_masking_options_come_from_the_config_and_random_tokens_are_ordinary():
    cfg = ModelConfig(family="encoder", mlm_probability=0.5, mlm_mask_fraction=0.0, mlm_random_fraction=1.0)
    out = objective_for("encoder", META, cfg)(_windows(32, 128), _gen())
    c = out["targets"] != -100
    assert c.float().mean() > 0.4
    assert not torch.isin(out["idx"][c], torch.tensor(ROLES.special_ids)).any()  # never a special token


def test_every_row_gets_a_prediction_and_all_special_rows_get_none():
    x = torch.randint(36, 292, (16, 4))
    x[0] = 0  # a row of specials only
    out = MaskedLM(ROLES, probability=1e-6)(x, _gen())
    assert (out["targets"][1:] != -100).sum(1).eq(1).all() and (out["targets"][0] == -100).all()


@pytest.mark.parametrize("family", ["decoder", "encoder", "seq2seq"])
def test_same_seed_same_batch(family):
    obj = objective_for(family, META)
    x = _windows(8, raw_length(obj, 64))
    a, b, c = obj(x, _gen(7)), obj(x, _gen(7)), obj(x, _gen(8))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if family != "decoder":
        assert not torch.equal(a["idx"], c["idx"])


def test_raw_window_lengths():
    assert raw_length(causal_lm, 64) == 65 and raw_length(objective_for("encoder", META), 64) == 64


@pytest.mark.parametrize("seq_len", [32, 64, 100, 256, 512])
def test_span_corruption_lengths_pack_exactly(seq_len):
    raw = raw_length_for(seq_len, 0.15, 3.0)
    assert span_lengths(raw, 0.15, 3.0)[0] == seq_len  # the input fills the model length
    assert span_lengths(raw + 1, 0.15, 3.0)[0] > seq_len  # and the raw window is the longest that does
    obj = objective_for("seq2seq", META)
    out = obj(_windows(4, obj.raw_length(seq_len)), _gen())
    assert out["idx"].shape == (4, seq_len) and out["targets"].shape == (4, span_lengths(raw, 0.15, 3.0)[1])


def test_noise_density_and_mean_span_length_within_tolerance():
    obj = SpanCorruption(ROLES)
    x = _windows(64, obj.raw_length(256))
    noise, spans = 0, 0
    for seed in range(4):
        mask = obj.noise_mask(x, _gen(seed))
        noise += int(mask.sum())
        spans += int((mask & ~torch.nn.functional.pad(mask, (1, 0))[:, :-1]).sum())
    assert noise / (4 * x.numel()) == pytest.approx(0.15, abs=0.01)
    assert noise / spans == pytest.approx(3.0, abs=0.25)


def test_inputs_and_targets_reconstruct_the_original_and_specials_are_never_corrupted():
    obj = objective_for("seq2seq", META, ModelConfig(family="seq2seq", noise_density=0.3, mean_span_length=2.0))
    x = _windows(32, obj.raw_length(64), special_rate=0.05, specials=4)  # bos/eos/pad/mask: sentinels are markers
    out = obj(x, _gen())
    assert torch.equal(out["dec_idx"][:, 0], torch.full((32,), ROLES.decoder_start_id))
    assert torch.equal(out["dec_idx"][:, 1:], out["targets"][:, :-1]) and (out["targets"][:, -1] == ROLES.eos_id).all()
    special = torch.isin(x, torch.tensor(ROLES.special_ids))
    assert not (obj.noise_mask(x, _gen()) & special).any()
    for i in range(len(x)):
        spans = split_spans(out["targets"][i].tolist(), ROLES.sentinel_ids, ROLES.eos_id)
        assert merge_spans(out["idx"][i].tolist(), spans, ROLES.sentinel_ids) == x[i].tolist()
        assert all(t not in ROLES.special_ids for span in spans for t in span)


def test_windows_crowded_with_specials_fall_back_to_first_fit():
    special = torch.zeros(20, dtype=torch.bool)
    special[[0, 4, 5, 9, 15]] = True
    mask = first_fit_mask(special, [3, 2, 3])
    assert mask.nonzero().flatten().tolist() == [1, 2, 3, 6, 7, 10, 11, 12]
    with pytest.raises(ValueError, match="cannot hold"):
        first_fit_mask(special, [4, 4, 4])
    obj = SpanCorruption(ROLES)
    x = torch.randint(36, 292, (4, obj.raw_length(32)))
    x[:, ::4] = 1  # every fourth token is eos: only spans of 1-3 tokens fit
    assert not (obj.noise_mask(x, _gen()) & (x == 1)).any()
    x[:, ::2] = 1  # 5 noise tokens in 2 spans of at most 1 token: impossible, and said so
    with pytest.raises(ValueError, match="cannot hold"):
        obj(x, _gen())


@pytest.mark.parametrize("kw,msg", [
    ({"family": "decoder", "noise_density": 0.2}, "only to --family seq2seq"),
    ({"family": "seq2seq", "mlm_probability": 0.2}, "only to --family encoder"),
    ({"family": "decoder", "mlm_mask_fraction": 0.5}, "only to --family encoder"),
    ({"family": "encoder", "mlm_probability": 1.5}, r"mlm_probability must be in \(0, 1\)"),
    ({"family": "encoder", "mlm_mask_fraction": 0.8, "mlm_random_fraction": 0.3}, "sum <= 1"),
    ({"family": "seq2seq", "mean_span_length": 0.5}, "mean_span_length must be >= 1"),
])
def test_config_mixing_family_only_options_is_a_clear_error(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ModelConfig(**kw)


def test_tokenizer_without_mask_or_sentinels_is_a_clear_error():
    hf = {"kind": "hf", "bos_id": 1, "eos_id": 2, "pad_id": None, "vocab_size": 100}
    with pytest.raises(ValueError, match="mask token"):
        objective_for("encoder", hf)
    with pytest.raises(ValueError, match="sentinel"):
        objective_for("seq2seq", hf)
