"""Character tokenizer (`--tokenizer char`): nanoGPT's shakespeare_char vocabulary through `prepare`."""

from __future__ import annotations

import numpy as np
import pytest

from llmcycle.config import DataConfig
from llmcycle.data.prepare import prepare
from llmcycle.data.shards import load_meta
from llmcycle.data.tokenizer import Tokenizer, char_tokenizer


def test_char_tokenizer_round_trip_ids_in_code_point_order_and_save_load(tmp_path):
    tok = char_tokenizer("hello, world\n")
    assert tok.vocab_size == len(set("hello, world\n"))
    assert tok.encode("\n ,dehlorw") == list(range(tok.vocab_size))  # sorted(set(text)), as nanoGPT's stoi
    assert tok.decode(tok.encode("world, hello\n")) == "world, hello\n"
    assert tok.bos_id is None and tok.eos_id is None and tok.special_ids == set()
    loaded = Tokenizer.load(tok.save(tmp_path))
    assert loaded.kind == "char" and loaded.encode_batch(["hold", "low"]) == [tok.encode("hold"), tok.encode("low")]


def test_char_tokenizer_names_unknown_characters():
    tok = char_tokenizer("abc")
    with pytest.raises(ValueError, match=r"\['z'\]"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="bos"):
        tok.encode("ab", bos=True)  # no special tokens to wrap with


def test_prepare_char_tiny_shakespeare_is_nanogpts_vocabulary(shared_data, tmp_path):
    path = shared_data / "tinyshakespeare" / "input.txt"
    text = path.read_text(encoding="utf-8")
    meta = prepare(DataConfig(source=str(path), tokenizer="char", val_fraction=0.1), tmp_path, progress=False)
    assert meta["vocab_size"] == 65 and load_meta(tmp_path)["tokenizer"]["kind"] == "char"
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}  # nanoGPT data/shakespeare_char/prepare.py
    tokens = {}
    for split in ("train", "val"):
        s = meta["splits"][split]
        tokens[split] = np.concatenate([np.fromfile(tmp_path / sh["file"], dtype="<u2") for sh in s["shards"]])
        assert s["tokens"] == s["text_bytes"] == len(tokens[split])  # one token per character, no bos/eos
    assert len(tokens["train"]) + len(tokens["val"]) == len(text)
    assert 0.05 < len(tokens["val"]) / len(text) < 0.15
    # the file's first document opens one of the splits, in nanoGPT's ids
    first = [stoi[c] for c in text[:200]]
    assert first in (tokens["train"][:200].tolist(), tokens["val"][:200].tolist())
    assert Tokenizer.load(tmp_path).decode(first) == text[:200]


def test_char_is_a_valid_data_config_choice():
    assert DataConfig(tokenizer="char").tokenizer == "char"
    with pytest.raises(ValueError, match="'char'"):
        DataConfig(tokenizer="chars")
