"""Corpus reading, the seeded split, token shards + meta.json, and the deterministic loader."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from llmcycle.config import DataConfig
from llmcycle.data import prepare as prepare_module
from llmcycle.data.corpus import (
    CHUNK_MAX_BYTES,
    CHUNK_MIN_BYTES,
    CorpusStats,
    default_corpus_root,
    iter_documents,
    split_of,
    text_hash,
)
from llmcycle.data.loader import TokenWindows, eval_ids, global_batch_ids, rank_share
from llmcycle.data.prepare import prepare
from llmcycle.data.shards import ShardWriter, load_meta
from llmcycle.data.tokenizer import Tokenizer


def read(cfg: DataConfig) -> tuple[list, CorpusStats]:
    stats = CorpusStats()
    return list(iter_documents(cfg, stats)), stats


def make_tree(root, files: dict) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


def code_corpus(root, n: int = 12) -> dict:
    """n distinct small Python-like files."""
    body = "def f{i}(x):\n    return x * {i} + {i2}  # ünïcode {i}\n"
    files = {f"pkg/mod_{i:02d}.py": body.format(i=i, i2=i**2) * (20 + i) for i in range(n)}
    make_tree(root, files)
    return files


# ---------------------------------------------------------------- corpus


def test_default_corpus_is_stdlib_code_without_tests_or_blobs():
    docs, stats = read(DataConfig())
    names = {d.name for d in docs}
    assert "json/decoder.py" in names and "collections/__init__.py" in names
    assert not any(n.startswith(("site-packages/", "dist-packages/", "test/")) for n in names)
    assert not any("/tests/" in n or "/test/" in n or "idle_test" in n or "/test_" in n for n in names)
    assert "pydoc_data/topics.py" not in names and not any("_sysconfigdata_" in n for n in names)
    assert all(n.endswith(".py") for n in names)
    assert max(len(d.text.encode()) for d in docs) <= 500_000
    assert (default_corpus_root() / "pydoc_data" / "topics.py").exists()  # it was really there to skip
    assert stats.sources == [f"python-stdlib:{default_corpus_root()}"] and stats.files_read >= len(docs)


def test_max_bytes_stops_after_that_many_bytes():
    docs, _ = read(DataConfig(max_bytes=50_000))
    sizes = [len(d.text.encode()) for d in docs]
    assert sum(sizes) >= 50_000 and sum(sizes[:-1]) < 50_000


def test_folder_include_exclude_globs_and_sorted_order(tmp_path):
    make_tree(tmp_path, {"b.py": "b", "a/x.py": "x", "a/y.txt": "y", "a/skip/z.py": "z", "data.bin": "d", "n.md": "m"})
    docs, stats = read(DataConfig(source=str(tmp_path), include=["*.py", "*.txt"], exclude=["*skip/*"]))
    assert [d.name for d in docs] == ["a/x.py", "a/y.txt", "b.py"]
    assert [d.text for d in docs] == ["x", "y", "b"]
    assert stats.files_read == 3 and stats.sources == [str(tmp_path.resolve())]


def test_jsonl_text_field_and_missing_field_error(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"body": "first", "id": 1}\n\n{"body": "second ☃"}\n')
    docs, _ = read(DataConfig(source=str(path), text_field="body"))
    assert [d.text for d in docs] == ["first", "second ☃"]
    with pytest.raises(ValueError, match=r"line 1 has no field 'text' \(available: \['body', 'id'\]\)"):
        read(DataConfig(source=str(path)))
    path.write_text('{"text": "ok"}\n{"txt": "typo"}\n')
    with pytest.raises(ValueError, match=r"c.jsonl line 2 has no field 'text'"):
        read(DataConfig(source=str(path)))


def test_exact_duplicates_removed_and_counted(tmp_path):
    make_tree(tmp_path, {"a.txt": "same", "b.txt": "same", "c.txt": "other", "d/e.txt": "same"})
    docs, stats = read(DataConfig(source=str(tmp_path)))
    assert [d.name for d in docs] == ["a.txt", "c.txt"]
    assert stats.duplicates_removed == 2


def test_undecodable_skipped_with_count_and_name_or_strict_error(tmp_path):
    make_tree(tmp_path, {"good.txt": "fine", "bad.txt": b"caf\xe9 latin-1", "worse.txt": b"\xff\xfe"})
    docs, stats = read(DataConfig(source=str(tmp_path)))
    assert [d.name for d in docs] == ["good.txt"]
    assert stats.skipped_undecodable == 2
    assert stats.skipped_names == [str(tmp_path / "bad.txt"), str(tmp_path / "worse.txt")]
    with pytest.raises(ValueError, match=r"bad\.txt is not valid UTF-8"):
        read(DataConfig(source=str(tmp_path), strict=True))


def test_missing_and_empty_sources_are_named(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "nope")):
        read(DataConfig(source=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match=rf"no documents found in {tmp_path}"):
        read(DataConfig(source=str(tmp_path)))
    make_tree(tmp_path, {"only.rs": "fn main() {}"})
    with pytest.raises(ValueError, match=r"include=\['\*\.py'\].*check the path and the globs"):
        read(DataConfig(source=str(tmp_path), include=["*.py"]))


def test_single_text_file_is_cut_into_blank_line_chunks(tmp_path):
    paragraphs = [f"paragraph {i} " + "word " * (50 + 37 * (i % 9)) + "\n" for i in range(400)]
    text = "\n".join(paragraphs) + "x" * 70_000 + "\r\nlast line without newline"
    (tmp_path / "book.txt").write_text(text, encoding="utf-8", newline="")
    docs, _ = read(DataConfig(source=str(tmp_path / "book.txt")))
    assert "".join(d.text for d in docs) == text  # nothing lost, CRLF kept
    assert len(docs) > 10 and docs[0].name == "book.txt#0"
    for d in docs[:-2]:
        size = len(d.text.encode())
        assert CHUNK_MIN_BYTES <= size < CHUNK_MAX_BYTES and d.text.endswith("\n\n")
    assert any(len(d.text) > CHUNK_MAX_BYTES for d in docs)  # a single 70 KB line is never cut


def test_split_is_seeded_deterministic_and_near_the_fraction():
    hashes = [text_hash(str(i)) for i in range(4000)]
    a = [split_of(h, 1, 0.1) for h in hashes]
    assert a == [split_of(h, 1, 0.1) for h in hashes]
    assert a != [split_of(h, 2, 0.1) for h in hashes]
    assert 300 < a.count("val") < 500


# ---------------------------------------------------------------- prepare


def split_documents(data_dir, split: str) -> list[str]:
    """Decode a split's token stream back into its documents (bos ... eos)."""
    meta, tok = load_meta(data_dir), Tokenizer.load(data_dir)
    shards = meta["splits"][split]["shards"]
    stream = np.concatenate([np.fromfile(data_dir / s["file"], dtype=meta["dtype"]) for s in shards])
    ends = np.flatnonzero(stream == tok.eos_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    assert (stream[starts] == tok.bos_id).all() and ends[-1] == len(stream) - 1
    return [tok.decode(stream[s + 1 : e]) for s, e in zip(starts, ends)]


@pytest.mark.parametrize("kind", ["bpe", "byte"])
def test_prepare_shards_match_meta_and_decode_to_the_documents(tmp_path, kind):
    files = code_corpus(tmp_path / "src", n=30)
    cfg = DataConfig(source=str(tmp_path / "src"), tokenizer=kind, vocab_size=320, val_fraction=0.2, seed=3)
    meta = prepare(cfg, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert meta == load_meta(out) and meta["dtype"] == "uint16" and meta["tokenizer"]["kind"] == kind
    assert meta["vocab_size"] == Tokenizer.load(out).vocab_size
    for split in ("train", "val"):
        info = meta["splits"][split]
        for shard in info["shards"]:
            data = (out / shard["file"]).read_bytes()
            assert len(data) == 2 * shard["tokens"] and hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert info["tokens"] == sum(s["tokens"] for s in info["shards"])
        expected = [t for t in files.values() if split_of(text_hash(t), 3, 0.2) == split]
        assert split_documents(out, split) == expected
        assert info["documents"] == len(expected) and info["text_bytes"] == sum(len(t.encode()) for t in expected)
    assert meta["splits"]["val"]["documents"] > 0
    assert meta["corpus"]["files_read"] == 30 and meta["data_config"]["seed"] == 3
    assert not list(out.glob(".*.tmp"))


def test_prepare_always_has_a_val_document(tmp_path):
    code_corpus(tmp_path / "src", n=3)
    cfg = DataConfig(source=str(tmp_path / "src"), tokenizer="byte", val_fraction=1e-9)
    meta = prepare(cfg, tmp_path / "out", progress=False)
    assert meta["val_document_moved_from_train"] is True
    assert meta["splits"]["val"]["documents"] == 1 and meta["splits"]["train"]["documents"] == 2
    assert split_documents(tmp_path / "out", "val") == [(tmp_path / "src/pkg/mod_02.py").read_text()]  # the last


def test_prepare_needs_two_documents_and_a_source(tmp_path):
    make_tree(tmp_path / "one", {"a.txt": "alone"})
    with pytest.raises(ValueError, match="only 1 document"):
        prepare(DataConfig(source=str(tmp_path / "one"), tokenizer="byte"), tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="does not exist"):
        prepare(DataConfig(source=str(tmp_path / "missing")), tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="no meta.json"):
        load_meta(tmp_path / "out")


def test_interrupted_prepare_leaves_no_meta_and_no_partial_shard(tmp_path, monkeypatch):
    lines = [json.dumps({"text": f"doc {i} " * 50}) for i in range(40)] + ["{not json"]
    (tmp_path / "c.jsonl").write_text("\n".join(lines))
    monkeypatch.setattr(prepare_module, "BATCH_BYTES", 1000)  # so shards are written before the error
    cfg = DataConfig(source=str(tmp_path / "c.jsonl"), tokenizer="byte", shard_tokens=500)
    with pytest.raises(ValueError, match="line 41"):
        prepare(cfg, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]  # no out/, no temporary folder beside it


def test_shard_writer_rolls_over_and_keeps_uint32(tmp_path):
    writer = ShardWriter(tmp_path, "train", np.uint32, shard_tokens=4)
    for chunk in ([1, 2, 3], [70_000, 5, 6, 7, 8, 9], [10]):
        writer.write(np.array(chunk))
    shards = writer.close()
    assert [s["tokens"] for s in shards] == [4, 4, 2]
    got = np.concatenate([np.fromfile(tmp_path / s["file"], dtype="<u4") for s in shards])
    assert got.tolist() == [1, 2, 3, 70_000, 5, 6, 7, 8, 9, 10]


# ---------------------------------------------------------------- loader


def test_loader_reads_windows_across_several_shards(tmp_path):
    code_corpus(tmp_path / "src", n=20)
    cfg = DataConfig(source=str(tmp_path / "src"), tokenizer="byte", shard_tokens=3000, val_fraction=0.1)
    meta = prepare(cfg, tmp_path / "out", progress=False)
    shards = meta["splits"]["train"]["shards"]
    assert len(shards) >= 3 and all(s["tokens"] == 3000 for s in shards[:-1])
    seq_len = 63
    windows = TokenWindows(tmp_path / "out", "train", seq_len)
    assert len(windows) == sum(s["tokens"] // 64 for s in shards)
    streams = [np.fromfile(tmp_path / "out" / s["file"], dtype="<u2") for s in shards]
    expected = np.concatenate([x[: len(x) // 64 * 64].reshape(-1, 64) for x in streams])
    got = windows.get(np.arange(len(windows)))
    assert got.dtype.is_floating_point is False and got.shape == (len(windows), 64)
    assert np.array_equal(got.numpy(), expected)
    assert np.array_equal(windows.get(np.array([len(windows) - 1, 0])).numpy(), expected[[-1, 0]])
    with pytest.raises(ValueError, match=r"split 'val' .* has \d+ tokens.*lower --seq-len or add data"):
        TokenWindows(tmp_path / "out", "val", 100_000)


def test_global_batch_ids_deterministic_and_each_window_once_per_epoch():
    n, batch = 37, 8  # batches straddle epoch boundaries
    ids = np.concatenate([global_batch_ids(s, batch, n, seed=5) for s in range(37)])  # 8 epochs exactly
    for epoch in range(8):
        assert sorted(ids[epoch * n : (epoch + 1) * n]) == list(range(n))
    assert not np.array_equal(ids[:n], ids[n : 2 * n])  # a fresh order each epoch
    assert np.array_equal(global_batch_ids(13, batch, n, seed=5), ids[13 * batch : 14 * batch])  # pure: resume
    assert not np.array_equal(global_batch_ids(0, batch, n, seed=6), ids[:batch])
    assert np.array_equal(ids[:n], np.random.default_rng([5, 0]).permutation(n))


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_rank_shares_are_disjoint_and_cover_the_global_batch(world_size):
    ids = global_batch_ids(3, 8, 1000, seed=0)
    shares = [rank_share(ids, r, world_size) for r in range(world_size)]
    assert all(len(s) == 8 // world_size for s in shares)
    assert np.array_equal(np.concatenate(shares), ids) and len(set(np.concatenate(shares))) == 8
    with pytest.raises(ValueError, match="not divisible by world_size=3"):
        rank_share(ids, 0, 3)


def test_eval_ids_fixed_and_wrap_when_few_windows():
    a = eval_ids(100, 3, 4, seed=1)
    assert len(a) == 3 and all(b.shape == (4,) for b in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, eval_ids(100, 3, 4, seed=1)))
    assert len(set(np.concatenate(a))) == 12
    small = np.concatenate(eval_ids(5, 3, 4, seed=1))
    assert sorted(np.bincount(small, minlength=5)) == [2, 2, 2, 3, 3]
