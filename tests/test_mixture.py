"""Continued pretraining with a data mixture: `prepare --mix` with a reused (imported) tokenizer, weighted
deterministic sampling, `train --init-from` an imported model, validation loss reported per source."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from llmcycle.cli import main
from llmcycle.config import DataConfig, RunConfig
from llmcycle.data.loader import MixtureWindows, TokenWindows, global_batch_ids, open_windows, source_windows
from llmcycle.data.tokenizer import byte_tokenizer


class FakeWindows:
    """Stands in for TokenWindows: window i of source s is filled with s * 1000 + i."""

    def __init__(self, source: int, n: int, seq_len: int = 3) -> None:
        self.source, self.n, self.seq_len = source, n, seq_len

    def __len__(self) -> int:
        return self.n

    def get(self, ids):
        return torch.tensor([[self.source * 1000 + int(i)] * (self.seq_len + 1) for i in ids])


def test_mixture_sampling_follows_the_weights_and_is_deterministic():
    mix = MixtureWindows([("domain", FakeWindows(1, 40), 0.5), ("general", FakeWindows(2, 900), 0.5)])
    src, local = mix.locate(np.arange(len(mix)))
    counts = np.bincount(src)
    assert abs(counts[0] / counts.sum() - 0.5) < 0.01  # one virtual epoch holds each source at its weight
    assert set(local[src == 0]) == set(range(40))  # the small source is repeated (upsampled), all of it used
    assert set(local[src == 1]) == set(range(900))
    ids = global_batch_ids(7, 64, len(mix), seed=3)
    a, b = mix.get(ids), mix.get(global_batch_ids(7, 64, len(mix), seed=3))
    assert torch.equal(a, b)
    assert ((a[:, 0] // 1000) == torch.from_numpy(src[ids] + 1)).all()
    small = MixtureWindows([("a", FakeWindows(1, 10_000), 0.1), ("b", FakeWindows(2, 10), 0.9)])
    s, loc = small.locate(np.arange(len(small)))
    assert abs(np.mean(s == 0) - 0.1) < 0.01 and len(set(loc[s == 0])) == (s == 0).sum()  # downsampled, spread


def test_bad_mix_entries_are_clear_errors():
    for bad in (["finance.jsonl"], ["finance.jsonl:-1"], ["x:abc"], ["a.txt:nan"], ["a.txt:inf", "b.txt:1"],
                ["a.txt:-inf"], ["a.txt:0"], ["a.txt:1e999"]):
        with pytest.raises(ValueError, match="SOURCE:WEIGHT"):
            DataConfig(mix=bad)
    with pytest.raises(ValueError, match="tokenizer='bpee' is not valid"):
        DataConfig(tokenizer="bpee")


def _domain_text(path, docs=60):
    rng = random.Random(0)
    words = ["revenue", "quarter", "margin", "bond", "yield", "equity", "dividend", "guidance", "rose", "fell"]
    paras = [" ".join(rng.choice(words) for _ in range(300)) + "." for _ in range(docs)]
    path.write_text("\n\n".join(paras))
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    from llmcycle.hub.importer import import_model

    src = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    transformers.LlamaForCausalLM(cfg).save_pretrained(src)
    byte_tokenizer().save(src)
    (src / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|bos|>", "eos_token": "<|eos|>"}))
    run = tmp_path_factory.mktemp("imported")
    import_model(str(src), run, overwrite=True)
    return run


def test_continued_pretraining_on_a_mixture(imported, tmp_path):
    cpt = tmp_path / "cpt"
    domain = _domain_text(tmp_path / "finance.txt")
    assert main(["prepare", "--run", str(cpt), "--tokenizer", str(imported), "--quiet", "--max-bytes", "150000",
                 "--mix", f"domain={domain}:0.5", "general=default:0.5"]) == 0
    meta = json.loads((cpt / "data" / "meta.json").read_text())
    assert [m["name"] for m in meta["mixture"]] == ["domain", "general"]
    assert meta["vocab_size"] == 292  # the imported model's tokenizer, not a new one
    assert len(TokenWindows(cpt / "data", "train", 64)) > 0  # a plain reader still sees every shard
    assert isinstance(open_windows(cpt / "data", "train", 64), MixtureWindows)
    assert set(source_windows(cpt / "data", "val", 64)) == {"domain", "general"}

    argv = ["train", "--run", str(cpt), "--init-from", str(imported), "--max-steps", "40", "--seq-len", "64",
            "--batch-size", "8", "--eval-every", "10", "--eval-batches", "2", "--lr", "3e-3", "--warmup-steps", "2",
            "--ckpt-every", "1000", "--quiet"]
    assert main(argv) == 0
    assert RunConfig.load(cpt / "config.json").model == RunConfig.load(imported / "config.json").model
    evals = [json.loads(line) for line in (cpt / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert [e["step"] for e in evals] == [0, 10, 20, 30, 40]
    assert all("val_loss/domain" in e and "val_loss/general" in e for e in evals)  # reported side by side
    first, last = evals[0], evals[-1]
    assert last["val_loss/domain"] < first["val_loss/domain"] - 1.0  # the domain is learned
    assert np.isfinite(last["val_loss/general"])
