"""`llmcycle prepare` on a run directory: the data is swapped in atomically, a trained run's checkpoints
are not orphaned without --overwrite, the model's vocabulary follows the tokenizer, damaged data is
named with its fix, and the data modules import without cycles."""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

import pytest

from llmcycle import rundir
from llmcycle.config import DataConfig, ModelConfig, RunConfig
from llmcycle.data import cli as data_cli
from llmcycle.data.loader import TokenWindows, open_windows
from llmcycle.data.prepare import prepare, prepare_run
from llmcycle.data.shards import load_meta

DATA_PKG = Path(__file__).resolve().parents[1] / "src" / "llmcycle" / "data"


def corpus(root: Path, n: int = 12, word: str = "alpha") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"doc_{i:02d}.txt").write_text(f"{word} {i} " * (40 + i))
    return root


def prepare_cli(*argv: str) -> int:
    p = argparse.ArgumentParser()
    data_cli.add_arguments(p)
    return data_cli.run(p.parse_args([*argv, "--quiet"]))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run(tmp_path) -> Path:
    run = tmp_path / "run"
    assert prepare_cli("--run", str(run), "--source", str(corpus(tmp_path / "src")), "--tokenizer", "byte") == 0
    return run


def test_a_failed_prepare_over_a_prepared_run_keeps_its_data(run, tmp_path):
    before, config = snapshot(rundir.data_dir(run)), rundir.config_path(run).read_bytes()
    one = corpus(tmp_path / "one", n=1)  # one document: all of it goes to validation, so prepare fails
    with pytest.raises(ValueError, match="only 1 document"):
        prepare_cli("--run", str(run), "--source", str(one))
    assert snapshot(rundir.data_dir(run)) == before and rundir.config_path(run).read_bytes() == config
    assert len(TokenWindows(rundir.data_dir(run), "train", 16)) > 0
    assert sorted(p.name for p in run.iterdir()) == sorted([rundir.CONFIG, rundir.DATA])  # no temporary left


def test_a_failed_prepare_into_a_new_run_leaves_nothing(tmp_path):
    one = corpus(tmp_path / "one", n=1)
    with pytest.raises(ValueError, match="only 1 document"):
        prepare_cli("--run", str(tmp_path / "new"), "--source", str(one), "--tokenizer", "byte")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one"]  # no new/, no new/data/val_000.bin
    mix = ["--mix", f"a={corpus(tmp_path / 'a', n=4)}:0.5", f"b={one}:0.5"]  # the second source fails
    with pytest.raises(ValueError, match="only 1 document"):
        prepare_cli("--run", str(tmp_path / "new"), "--tokenizer", "byte", *mix)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "one"]


def test_prepare_over_a_trained_run_refuses_unless_overwrite(run, tmp_path, capsys):
    rundir.step_dir(run, 20).mkdir(parents=True)
    (rundir.step_dir(run, 20) / rundir.WEIGHTS).write_bytes(b"weights of the old data")
    rundir.metrics_path(run).write_text('{"step": 20, "loss": 1.0}\n')
    before = snapshot(run)
    other = corpus(tmp_path / "other", word="beta")
    with pytest.raises(ValueError, match=r"1 checkpoint\(s\) \(newest step_000020\).*--overwrite"):
        prepare_cli("--run", str(run), "--source", str(other), "--tokenizer", "bpe", "--vocab-size", "300")
    assert snapshot(run) == before  # nothing touched
    capsys.readouterr()
    assert prepare_cli("--run", str(run), "--source", str(other), "--tokenizer", "bpe", "--vocab-size", "300",
                       "--overwrite") == 0
    assert "deleted 1 checkpoint(s) and metrics.jsonl" in capsys.readouterr().out
    assert not rundir.checkpoints_dir(run).exists() and not rundir.metrics_path(run).exists()
    assert rundir.load_config(run).data.source == str(other) and load_meta(rundir.data_dir(run))["vocab_size"] == 300


def test_a_failed_overwrite_keeps_the_checkpoints(run, tmp_path):
    rundir.step_dir(run, 5).mkdir(parents=True)
    with pytest.raises(ValueError, match="only 1 document"):
        prepare_cli("--run", str(run), "--source", str(corpus(tmp_path / "one", n=1)), "--overwrite")
    assert rundir.list_checkpoints(run) == [rundir.step_dir(run, 5)]


def test_the_model_vocab_follows_the_tokenizer_and_flags_not_given_keep_the_saved_config(run, tmp_path):
    cfg = rundir.load_config(run)
    assert cfg.model.vocab_size == load_meta(rundir.data_dir(run))["vocab_size"] == 292  # byte: 36 specials + 256
    assert prepare_cli("--run", str(run), "--max-bytes", "5000") == 0  # tokenizer and source kept from config.json
    cfg = rundir.load_config(run)
    assert cfg.data.tokenizer == "byte" and cfg.data.max_bytes == 5000 and cfg.model.vocab_size == 292
    # a reused (imported) tokenizer smaller than the model's embedding keeps the embedding
    base = RunConfig(model=ModelConfig(vocab_size=320))
    data = DataConfig(source=str(tmp_path / "src"), tokenizer=str(run))
    meta, cfg = prepare_run(tmp_path / "cpt", data, base, progress=False)
    assert meta["vocab_size"] == 292 and cfg.model.vocab_size == 320 == rundir.load_config(tmp_path / "cpt").model.vocab_size


def test_prepare_refuses_to_replace_a_folder_that_is_not_prepared_data(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds no prepared data"):
        prepare(DataConfig(source=str(corpus(tmp_path / "src")), tokenizer="byte"), tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_damaged_data_is_found_when_opened_and_named_with_the_fix(run):
    data = rundir.data_dir(run)
    fix = re.escape(f"llmcycle prepare --run {run} --overwrite")
    shard = data / load_meta(data)["splits"]["train"]["shards"][0]["file"]
    whole = shard.read_bytes()
    shard.write_bytes(whole[:-6])
    with pytest.raises(ValueError, match=rf"{shard.name} holds {len(whole) - 6} bytes .* says {len(whole) // 2} tokens"
                                         rf".*truncated.*{fix}"):
        open_windows(data, "train", 16)
    shard.unlink()
    with pytest.raises(ValueError, match=rf"{shard.name} is missing .*{fix}"):
        TokenWindows(data, "train", 16)
    rundir.meta_path(data).write_text('{"format_version": 1, "splits": {')
    with pytest.raises(ValueError, match=rf"meta.json is not valid JSON .*{fix}"):
        open_windows(data, "val", 16)
    rundir.meta_path(data).write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match=rf"lacks the 'splits'.*{fix}"):
        load_meta(data)
    rundir.meta_path(data).unlink()
    with pytest.raises(ValueError, match=re.escape(f"no meta.json in {data}") + ".*" + re.escape(f"prepare --run {run}`")):
        load_meta(data)


def test_each_mixture_source_is_checked_too(tmp_path):
    run = tmp_path / "run"
    mix = [f"a={corpus(tmp_path / 'a', n=6)}:0.3", f"b={corpus(tmp_path / 'b', n=6, word='beta')}:0.7"]
    assert prepare_cli("--run", str(run), "--tokenizer", "byte", "--mix", *mix) == 0
    part = rundir.data_dir(run) / "b"
    (part / load_meta(part)["splits"]["val"]["shards"][0]["file"]).write_bytes(b"\0\0")
    with pytest.raises(ValueError, match="b/val_000.bin holds 2 bytes.*" + re.escape(f"prepare --run {run} --overwrite")):
        open_windows(rundir.data_dir(run), "val", 8)


def _top_level_imports(path: Path) -> set[str]:
    """The llmcycle.data modules `path` imports at module level (function-local imports excluded)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmcycle.data."):
            out.add(node.module.removeprefix("llmcycle.data."))
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("llmcycle.data.") for a in node.names if a.name.startswith("llmcycle.data.")}
    return out


def test_the_data_modules_import_each_other_without_cycles():
    graph = {p.stem: _top_level_imports(p) for p in DATA_PKG.glob("*.py") if p.stem != "__init__"}
    assert graph["loader"] == {"shards"} and "prepare" not in graph["mixture"] | graph["shards"]
    order, seen = [], set()

    def visit(mod: str, stack: tuple) -> None:
        assert mod not in stack, f"import cycle: {' -> '.join(stack + (mod,))}"
        if mod not in seen:
            for dep in sorted(graph.get(mod, ())):
                visit(dep, stack + (mod,))
            seen.add(mod)
            order.append(mod)

    for mod in sorted(graph):
        visit(mod, ())
    assert set(order) == set(graph)
