"""The command line: every flag documented, errors are messages (not tracebacks), and the
one-command lifecycle writes a complete report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmcycle.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_missing_corpus_is_a_message_and_exit_code_2(tmp_path, capsys):
    code = main(["prepare", "--run", str(tmp_path / "r"), "--source", str(tmp_path / "nope.txt"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "nope.txt" in err and "Traceback" not in err


def test_train_without_prepare_says_what_to_do(tmp_path, capsys):
    assert main(["train", "--run", str(tmp_path), "--max-steps", "1"]) == 2
    assert "llmcycle prepare" in capsys.readouterr().err


def test_impossible_config_from_flags(prepared_run, capsys):
    assert main(["train", "--run", str(prepared_run), "--d-model", "30", "--n-head", "4", "--quiet"]) == 2
    assert "not divisible by n_head" in capsys.readouterr().err


@pytest.fixture(scope="module")
def lifecycle_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lifecycle") / "run"
    assert main(["run", "--out", str(out), "--budget", "6", "--max-bytes", "400000", "--quiet"]) == 0
    return out


def test_run_writes_complete_report(lifecycle_run):
    out = lifecycle_run
    for name in ("config.json", "report.md", "samples.md", "loss.png", "metrics.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "report.md").read_text()
    assert f"{summary['params']:,}" in report and "bits per byte" in report
    assert "## How the model was sized" in report and summary["sizing"]["rule"].startswith("Chinchilla")
    assert summary["sizing"]["params"] == summary["params"]  # the compute-optimal ladder model was trained
    for setting in ("greedy", "temperature 0.8, top-k 50", "temperature 1, top-p 0.9"):
        assert f"### {setting}" in report
    assert summary["tokens_per_param"] == pytest.approx(summary["tokens"] / summary["params"])
    assert summary["flops"] == summary["flops_per_token"] * summary["tokens"]
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generate_from_cli_streams_and_is_seeded(lifecycle_run):
    def gen(*extra):
        r = subprocess.run([sys.executable, "-m", "llmcycle", "generate", "--run", str(lifecycle_run), "def f(x):",
                            "--max-new-tokens", "12", *extra], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    a = gen("--seed", "3")
    assert a.startswith("def f(x):") and a == gen("--seed", "3")
    long = "x " * 5000
    r = subprocess.run([sys.executable, "-m", "llmcycle", "generate", "--run", str(lifecycle_run), long],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--truncate left" in r.stderr
    assert gen("--truncate", "left", "--temperature", "0").startswith("def f(x):")
    assert gen("--temperature", "0", "--compile") == gen("--temperature", "0")  # compiled decoding: same text


def test_rerunning_run_reuses_its_directory_but_not_a_foreign_one(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["run", "--out", str(foreign), "--budget", "1", "--max-bytes", "100000", "--quiet"]) == 2
    assert "not an llmcycle run directory" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.S)
    first = blocks[0]
    commands = [line.split("  #")[0].strip() for line in first.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2 and "llmcycle run" in commands[0] and "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
