"""Tokenizer: exact round trip for any text, stable special ids, save/load, imports, compression."""

from __future__ import annotations

import json
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcycle.config import DataConfig
from llmcycle.data.corpus import CorpusStats, iter_documents, split_of
from llmcycle.data.tokenizer import (
    BOS,
    EOS,
    MASK,
    NUM_SENTINELS,
    PAD,
    SPECIAL_TOKENS,
    Tokenizer,
    byte_tokenizer,
    train_bpe,
)

TRICKY = [
    "",
    " leading space",
    "trailing  \n\n",
    "tabs\tand\r\nCRLF\r",
    "\x00\x01\x7f control",
    "héllo wörld ☃ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🎉👩‍👩‍👧",
    "def f(x):\n    return x ** 2  # comment\n",
    f"text that mentions {BOS} and {EOS}{PAD} and <|sentinel_3|> literally",
    "<|bos",
    "\u0300 combining first, then \ufeff BOM and \u200b zero width",
]


@cache
def small_bpe() -> Tokenizer:
    text = "\n".join(TRICKY * 3) + "def main():\n    print('hello world')\n" * 20 + "the quick brown fox " * 50
    return train_bpe([text, "ünïcödé ∀x∈ℝ " * 30], vocab_size=400)


@pytest.mark.parametrize("make", [byte_tokenizer, small_bpe], ids=["byte", "bpe"])
@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_examples(make, text):
    tok = make()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert not set(ids) & tok.special_ids, "special ids must never come from the text itself"
    assert tok.decode(tok.encode(text, bos=True, eos=True), skip_special=True) == text


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_property_byte(text):
    tok = byte_tokenizer()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) == len(text.encode("utf-8"))  # one token per byte


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_property_bpe(text):
    tok = small_bpe()
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=8))
def test_encode_batch_matches_encode(texts):
    tok = small_bpe()
    assert tok.encode_batch(texts, bos=True, eos=True) == [tok.encode(t, bos=True, eos=True) for t in texts]


@pytest.mark.parametrize("make", [byte_tokenizer, small_bpe], ids=["byte", "bpe"])
def test_special_ids_distinct_stable_and_survive_save_load(make, tmp_path):
    tok = make()
    roles = [tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id, *tok.sentinel_ids]
    assert roles == list(range(len(SPECIAL_TOKENS)))  # fixed ids, whatever the corpus
    assert len(tok.sentinel_ids) == NUM_SENTINELS
    assert tok.special_ids == set(roles)
    assert tok.encode("x", bos=True, eos=True)[0] == tok.bos_id
    assert tok.encode("x", bos=True, eos=True)[-1] == tok.eos_id

    written = tok.save(tmp_path)
    assert written == tmp_path / "tokenizer.json"
    json.loads(written.read_text())  # standard Hugging Face JSON
    again = Tokenizer.load(tmp_path)
    assert again.kind == tok.kind and again.vocab_size == tok.vocab_size
    assert [again.bos_id, again.eos_id, again.pad_id, again.mask_id, *again.sentinel_ids] == roles
    sample = TRICKY[5] + TRICKY[7]
    assert again.encode(sample) == tok.encode(sample)
    assert again.decode(again.encode(sample)) == sample

    (tmp_path / "tokenizer_meta.json").unlink()  # a bare tokenizer.json of ours: roles inferred
    bare = Tokenizer.load(tmp_path / "tokenizer.json")
    assert [bare.bos_id, bare.eos_id, bare.pad_id, bare.mask_id, *bare.sentinel_ids] == roles
    assert bare.kind == tok.kind


def test_byte_tokenizer_has_exactly_bytes_and_specials():
    tok = byte_tokenizer()
    assert tok.vocab_size == len(SPECIAL_TOKENS) + 256
    ids = tok.encode(bytes(range(128)).decode("ascii"))
    assert len(set(ids)) == 128 and min(ids) >= len(SPECIAL_TOKENS)


def test_load_missing_names_the_path(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)):
        Tokenizer.load(tmp_path)


def test_from_hf_roles_are_settable_and_checked(tmp_path):
    path = small_bpe().save(tmp_path)
    tok = Tokenizer.from_hf(path, bos=EOS, eos=BOS, pad=None)
    assert tok.kind == "hf" and tok.bos_id == 1 and tok.eos_id == 0 and tok.pad_id is None
    assert tok.sentinel_ids == [] and tok.mask_id is None
    assert tok.token_to_id(MASK) in tok.special_ids  # flagged special in the file itself
    with pytest.raises(ValueError, match=r"pad='<\|im_start\|>' is not a token"):
        Tokenizer.from_hf(path, pad="<|im_start|>")
    no_bos = Tokenizer.from_hf(path, eos=EOS)
    with pytest.raises(ValueError, match="no bos token"):
        no_bos.encode("x", bos=True)
    reloaded = Tokenizer.load(tok.save(tmp_path / "copy"))
    assert (reloaded.kind, reloaded.bos_id, reloaded.eos_id) == ("hf", 1, 0)


def test_bpe_compresses_held_out_code():
    cfg = DataConfig(max_bytes=1_500_000)
    train, val = [], []
    for doc in iter_documents(cfg, CorpusStats()):
        (val if split_of(doc.sha256, cfg.seed, 0.2) == "val" else train).append(doc.text)
    assert train and val
    tok = train_bpe(train, vocab_size=1024)
    assert tok.vocab_size == 1024
    val_bytes = sum(len(t.encode("utf-8")) for t in val)
    bytes_per_token = val_bytes / sum(map(len, tok.encode_batch(val)))
    assert bytes_per_token > 2.0, bytes_per_token
    assert all(tok.decode(ids) == text for ids, text in zip(tok.encode_batch(val), val))


def test_train_bpe_rejects_tiny_vocab():
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(["abc"], vocab_size=100)
