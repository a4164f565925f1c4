"""Bad input across verbs: each case gets a one-line actionable error and a non-zero exit, never a
traceback. A table of (argv, expected message fragment, exit code), run in-process through
`llmcycle.cli.main`; `{run}` is a tiny trained run, `{prep}` a prepared run without checkpoints,
`{f}` a folder of bad files, `{new}` a fresh path, `{root}/NAME` a copy of `{run}` wrong in one way.

`serve` cases run as subprocesses with a timeout: each must be refused before a server starts, so a
case that slips through its checks would start one and hang; the timeout turns that into a failure.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmcycle import rundir
from llmcycle.cli import main
from llmcycle.config import RunConfig

LONG = "word " * 200  # ~1000 bytes: longer than the tiny model's 64-token context


@pytest.fixture(scope="module")
def places(prepared_run, tmp_path_factory):
    from llmcycle.train.loop import train

    root = tmp_path_factory.mktemp("bad")
    run, prep, f = root / "run", root / "prep", root / "files"
    shutil.copytree(prepared_run / "data", run / "data")
    cfg = RunConfig.load(rundir.config_path(prepared_run))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=2, eval_every=1000, ckpt_every=2))
    train(run, cfg, progress=False)
    shutil.copytree(prepared_run, prep)
    f.mkdir()
    (f / "empty.txt").write_bytes(b"")
    (f / "binary.bin").write_bytes(bytes(range(256)) * 64)
    (f / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e\n".encode("latin-1") * 50)
    (f / "bad.jsonl").write_text('{"text": "fine"}\n{"text": "broken\n{"text": "ok"}\n')
    (f / "nofield.jsonl").write_text('{"body": "a"}\n{"body": "b"}\n')
    (f / "pc.jsonl").write_text('{"prompt": "abc", "completion": "cba"}\n' * 20)
    (f / "chat.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n' * 20)
    (f / "bad.json").write_text('{"hidden_size": 64,')
    (f / "list.json").write_text('[1, 2]')
    (f / "empty.gguf").write_bytes(b"")
    (f / "garbage.gguf").write_bytes(b"NOTGGUF" + bytes(100))
    (f / "nocfg").mkdir()
    (f / "badcfg").mkdir()
    (f / "badcfg" / "config.json").write_text("{not json")
    (f / "full").mkdir()
    (f / "full" / "x").write_text("x")
    for name, text in [("badconfig", "{not json"), ("emptyconfig", ""), ("listconfig", "[]")]:
        shutil.copytree(prepared_run / "data", root / name / "data")
        (root / name / "config.json").write_text(text)
    _variants(run, root)
    return {"run": run, "prep": prep, "f": f, "root": root}


def _variants(run, root) -> None:
    """Copies of the trained run, each wrong in one way: another tokenizer swapped in after prepare,
    an encoder's config, a LoRA fine-tune's adapter, truncated weights."""
    from llmcycle.data.tokenizer import char_tokenizer

    for name in ("swapped", "encoder", "lora", "truncated"):
        shutil.copytree(run, root / name)
    char_tokenizer(set("abcdefgh ")).save(rundir.data_dir(root / "swapped"))
    cfg = json.loads(rundir.config_path(root / "encoder").read_text())
    cfg["model"]["family"] = "encoder"
    rundir.config_path(root / "encoder").write_text(json.dumps(cfg))
    rundir.adapter_path(root / "lora").write_bytes(b"")
    weights = rundir.weights_path(root / "truncated")
    weights.write_bytes(weights.read_bytes()[:100])


# (id, argv, stdin or None, expected fragment of stderr (case-insensitive), exit code)
CASES = [
    # ---- prepare
    ("prepare-missing-source", "prepare --quiet --run {new} --source {f}/nope.txt", None, "does not exist", 2),
    ("prepare-empty-file", "prepare --quiet --run {new} --source {f}/empty.txt --tokenizer byte", None, "empty", 2),
    ("prepare-binary-file", "prepare --quiet --run {new} --source {f}/binary.bin --tokenizer byte --strict", None, "utf-8", 2),
    ("prepare-latin1-strict", "prepare --quiet --run {new} --source {f}/latin1.txt --tokenizer byte --strict", None, "utf-8", 2),
    ("prepare-bad-jsonl-line", "prepare --quiet --run {new} --source {f}/bad.jsonl --tokenizer byte", None, "line 2", 2),
    ("prepare-jsonl-no-field", "prepare --quiet --run {new} --source {f}/nofield.jsonl --tokenizer byte", None, "text", 2),
    ("prepare-vocab-zero", "prepare --quiet --run {new} --vocab-size 0", None, "vocab", 2),
    ("prepare-vocab-negative", "prepare --quiet --run {new} --vocab-size -5", None, "vocab", 2),
    ("prepare-val-fraction-big", "prepare --quiet --run {new} --val-fraction 1.5", None, "val_fraction", 2),
    ("prepare-val-fraction-neg", "prepare --quiet --run {new} --val-fraction -0.1", None, "val_fraction", 2),
    ("prepare-missing-tokenizer", "prepare --quiet --run {new} --tokenizer {f}/nope.json", None, "nope.json", 2),
    ("prepare-max-bytes-zero", "prepare --quiet --run {new} --max-bytes 0 --tokenizer byte", None, "max_bytes", 2),
    ("prepare-mix-bad", "prepare --quiet --run {new} --mix nonsense", None, "mix", 2),
    ("prepare-not-a-number", "prepare --quiet --run {new} --vocab-size lots", None, "invalid int", 2),
    # ---- train
    ("train-no-run", "train --run {new}", None, "llmcycle prepare", 2),
    ("train-lr-negative", "train --run {prep} --lr -1 --overwrite", None, "lr", 2),
    ("train-lr-nan", "train --run {prep} --lr nan --overwrite", None, "lr", 2),
    ("train-batch-zero", "train --run {prep} --batch-size 0 --overwrite", None, "batch_size", 2),
    ("train-steps-negative", "train --run {prep} --max-steps -3 --overwrite", None, "max_steps", 2),
    ("train-seq-longer-than-context", "train --run {prep} --seq-len 1000 --overwrite", None, "seq_len", 2),
    ("train-heads-indivisible", "train --run {prep} --n-head 5 --overwrite", None, "n_head", 2),
    ("train-dropout-big", "train --run {prep} --dropout 1.5 --overwrite", None, "dropout", 2),
    ("train-unknown-strategy", "train --run {prep} --strategy zero9 --overwrite", None, "strategy", 2),
    ("train-resume-new-model", "train --run {run} --resume --n-layer 3", None, "--resume continues", 2),
    ("train-nproc-single", "train --run {prep} --nproc 2 --overwrite", None, "--strategy ddp or fsdp", 2),
    ("train-resume-nothing", "train --run {prep} --resume", None, "no complete checkpoint", 2),
    ("train-existing-ckpts", "train --run {run}", None, "--resume", 2),
    ("train-config-malformed", "train --run {root}/badconfig", None, "config.json", 2),
    ("train-config-empty", "train --run {root}/emptyconfig", None, "config.json", 2),
    ("train-config-list", "train --run {root}/listconfig", None, "config.json", 2),
    ("train-init-from-missing", "train --run {prep} --init-from {f}/nope --overwrite", None, "nope", 2),
    ("train-tokenizer-swapped", "train --run {root}/swapped --resume --max-steps 4", None, "is not the tokenizer", 2),
    # ---- generate
    ("gen-temperature-inf", "generate --run {run} --temperature inf hi", None, "temperature", 2),
    ("gen-temperature-negative", "generate --run {run} --temperature -1 hi", None, "temperature", 2),
    ("gen-top-p-zero", "generate --run {run} --top-p 0 hi", None, "top_p", 2),
    ("gen-top-p-big", "generate --run {run} --top-p 1.5 hi", None, "top_p", 2),
    ("gen-top-k-zero", "generate --run {run} --top-k 0 hi", None, "top_k", 2),
    ("gen-max-new-negative", "generate --run {run} --max-new-tokens -1 hi", None, "max_new_tokens", 2),
    ("gen-num-samples-zero", "generate --run {run} --num-samples 0 hi", None, "num_samples", 2),
    ("gen-prompt-too-long", "generate --run {run} " + LONG.strip().replace(" ", "_"), None, "context", 2),
    ("gen-file-missing", "generate --run {run} --file {f}/nope.txt", None, "nope.txt", 2),
    ("gen-file-binary", "generate --run {run} --file {f}/binary.bin", None, "binary.bin", 2),
    ("gen-file-empty", "generate --run {run} --file {f}/empty.txt", None, "empty.txt", 2),
    ("gen-no-run", "generate --run {new} hi", None, "config.json", 2),
    ("gen-no-checkpoint", "generate --run {prep} hi", None, "no checkpoint", 2),
    ("gen-chat-no-template", "generate --run {run} --chat hi", None, "template", 2),
    ("gen-tokenizer-swapped", "generate --run {root}/swapped hi", None, "llmcycle prepare", 2),
    # ---- chat (stdin)
    ("chat-no-template", "chat --run {run}", "hello\n", "template", 2),
    ("chat-temperature-nan", "chat --run {run} --temperature nan", "hello\n", "temperature", 2),
    ("chat-no-run", "chat --run {new}", "hello\n", "config.json", 2),
    # ---- import
    ("import-missing", "import {f}/nope.gguf --out {new}", None, "nope.gguf", 2),
    ("import-empty-gguf", "import {f}/empty.gguf --out {new}", None, "empty.gguf", 2),
    ("import-garbage-gguf", "import {f}/garbage.gguf --out {new}", None, "garbage.gguf", 2),
    ("import-folder-no-config", "import {f}/nocfg --out {new}", None, "config.json", 2),
    ("import-folder-bad-config", "import {f}/badcfg --out {new}", None, "config.json", 2),
    ("import-out-exists", "import {f}/badcfg --out {f}/full", None, "overwrite", 2),
    # ---- export
    ("export-unknown-format", "export --run {run} --to onnx {new}", None, "hf", 2),
    ("export-no-run", "export --run {new} --to hf {new}2", None, "config.json", 2),
    ("export-no-checkpoint", "export --run {prep} --to hf {new}", None, "no checkpoint", 2),
    ("export-non-empty-out", "export --run {run} --to hf {f}/full", None, "overwrite", 2),
    ("export-tokenizer-swapped", "export --run {root}/swapped --to hf {new}", None, "is not the tokenizer", 2),
    # ---- eval
    ("eval-unknown-task", "eval --run {run} --task nosuchtask", None, "nosuchtask", 2),
    ("eval-negative-shots", "eval --run {run} --task sst2 --shots -1 --data-dir {f}", None, "shot counts", 2),
    ("eval-limit-zero", "eval --run {run} --task sst2 --limit 0 --data-dir {f}", None, "limit", 2),
    ("eval-no-run", "eval --run {new} --task sst2", None, "config.json", 2),
    ("eval-missing-data", "eval --run {run} --task sst2 --data-dir {f}/nodata", None, "nodata", 2),
    ("eval-hf-missing", "eval --hf {f}/nope --task sst2 --out {new}", None, "nope", 2),
    ("eval-no-model", "eval --task sst2", None, "--run", 2),
    # ---- finetune
    ("finetune-no-base", "finetune --quiet --run {new} --data {f}/bad.jsonl", None, "--init-from", 2),
    ("finetune-base-not-a-run", "finetune --quiet --run {new} --init-from {f}/nocfg --data {f}/bad.jsonl", None, "config.json", 2),
    ("finetune-missing-data", "finetune --quiet --run {new} --init-from {run} --data {f}/nope.jsonl", None, "nope.jsonl", 2),
    ("finetune-bad-jsonl-line", "finetune --quiet --run {new} --init-from {run} --data {f}/bad.jsonl", None, "bad.jsonl:2: not valid json", 2),
    ("finetune-missing-fields", "finetune --quiet --run {new} --init-from {run} --data {f}/nofield.jsonl", None, "prompt", 2),
    ("finetune-lora-targets-match-nothing", "finetune --quiet --run {new} --init-from {run} --data {f}/pc.jsonl "
     "--lora-targets nosuchlayer", None, "nosuchlayer", 2),
    ("finetune-chat-without-template", "finetune --quiet --run {new} --init-from {run} --data {f}/chat.jsonl", None,
     "chat template", 2),
    ("finetune-two-budgets", "finetune --quiet --run {new} --init-from {run} --data {f}/pc.jsonl --epochs 1 "
     "--max-steps 3", None, "one budget", 2),
    ("finetune-resume-not-a-finetune", "finetune --quiet --run {run} --resume", None, "not a fine-tune run", 2),
    # ---- plan
    ("plan-negative-tokens", "plan --preset gpt3-small --tokens=-1e12", None, "tokens", 2),
    ("plan-negative-tokens-json", "plan --preset gpt3-small --tokens=-1e12 --json", None, "tokens", 2),
    ("plan-unknown-preset", "plan --preset gpt9-huge", None, "gpt9-huge", 2),
    ("plan-unknown-gpu", "plan --preset gpt3-small --gpu rtx9999", None, "rtx9999", 2),
    ("plan-negative-params", "plan --params=-5", None, "params", 2),
    ("plan-absurd-params", "plan --params 1e30", None, "params", 2),
    ("plan-zero-gpus", "plan --preset gpt3-small --gpus 0", None, "gpus", 2),
    ("plan-zero-layers", "plan --layers 0 --d-model 64 --heads 4", None, "layers", 2),
    ("plan-heads-indivisible", "plan --layers 2 --d-model 64 --heads 5", None, "heads", 2),
    ("plan-hf-config-missing", "plan --hf-config {f}/nope.json", None, "nope.json", 2),
    ("plan-hf-config-malformed", "plan --hf-config {f}/bad.json", None, "bad.json", 2),
    ("plan-hf-config-list", "plan --hf-config {f}/list.json", None, "list.json", 2),
    ("plan-run-missing", "plan --run {f}/nope", None, "nope", 2),
    ("plan-mfu-big", "plan --preset gpt3-small --mfu 3", None, "mfu", 2),
    ("plan-negative-budget", "plan --preset gpt3-small --budget-pf-days=-2", None, "budget", 2),
    ("plan-negative-inference-tokens", "plan --params 7e9 --inference-tokens=-2e12", None, "inference-tokens", 2),
    # ---- no verb / unknown verb
    ("unknown-verb", "fly", None, "invalid choice", 2),
]


def _run(argv: list[str], stdin: str | None, monkeypatch, capsys) -> tuple[int, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code if isinstance(e.code, int) else 1
    cap = capsys.readouterr()
    return code, cap.err


def test_the_table_is_big_enough():
    assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,cmd,stdin,fragment,code", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(places, tmp_path, monkeypatch, capsys, name, cmd, stdin, fragment, code):
    subs = {k: str(v) for k, v in places.items()} | {"new": str(tmp_path / "new")}
    argv = [a.format(**subs) for a in cmd.split()]
    got, err = _run(argv, stdin, monkeypatch, capsys)
    assert "Traceback" not in err
    assert got == code, f"exit {got}, stderr: {err}"
    assert fragment.lower() in err.lower(), err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert len(lines) == 1, f"not one line: {err}"


# ------------------------------------------------------------------ serve: refused before a server starts

# (id, argv, extra environment, expected fragment of stderr, exit code); {busy}: a port held open
SERVE_CASES = [
    ("serve-no-run", "serve --run {new}", {}, "not a run directory", 2),
    ("serve-no-checkpoint", "serve --run {prep}", {}, "no checkpoint", 2),
    ("serve-encoder", "serve --run {root}/encoder", {}, "runs decoder models", 2),
    ("serve-lora-unmerged", "serve --run {root}/lora", {}, "--merge", 2),
    ("serve-truncated-weights", "serve --run {root}/truncated", {}, "cannot be read as safetensors", 2),
    ("serve-tokenizer-swapped", "serve --run {root}/swapped", {}, "is not the tokenizer", 2),
    ("serve-bad-quantize", "serve --run {run} --quantize int3", {}, "invalid choice", 2),
    ("serve-port-negative", "serve --run {run} --port -1", {}, "--port must be >= 0", 2),
    ("serve-port-too-big", "serve --run {run} --port 70000", {}, "0..65535", 2),
    ("serve-port-not-a-number", "serve --run {run} --port http", {}, "invalid int", 2),
    ("serve-port-in-use", "serve --run {run} --port {busy}", {}, "address already in use", 2),
    ("serve-host-not-local", "serve --run {run} --host 192.0.2.1 --port 0", {}, "cannot listen on 192.0.2.1", 2),
    ("serve-max-batch-zero", "serve --run {run} --max-batch 0", {}, "--max-batch must be >= 1", 2),
    ("serve-max-queue-negative", "serve --run {run} --max-queue -1", {}, "--max-queue", 2),
    ("serve-max-seq-len-zero", "serve --run {run} --max-seq-len 0", {}, "--max-seq-len", 2),
    ("serve-threads-negative", "serve --run {run} --threads -2", {}, "--threads", 2),
    ("serve-empty-api-key", "serve --run {run} --api-key=", {}, "api key is empty", 2),
    ("serve-empty-api-key-env", "serve --run {run}", {"LLMCYCLE_API_KEY": ""}, "api key is empty", 2),
    ("serve-empty-model-name", "serve --run {run} --model-name=", {}, "--model-name is empty", 2),
    ("serve-bad-log-level", "serve --run {run} --log-level loud", {}, "--log-level", 2),
    ("serve-unknown-flag", "serve --run {run} --workers 4", {}, "unrecognized arguments", 2),
]
SERVE_TIMEOUT = 90  # seconds: far more than a refusal takes (~2-5 s), far less than a test run's patience


def _serve(argv: list[str], env: dict) -> tuple[int | str, str]:
    src = str(Path(rundir.__file__).resolve().parents[1])  # the tree under test
    base = {k: v for k, v in os.environ.items() if k != "LLMCYCLE_API_KEY"}  # only a case's own
    try:
        p = subprocess.run([sys.executable, "-m", "llmcycle", *argv], capture_output=True, text=True,
                           timeout=SERVE_TIMEOUT, env={**base, "PYTHONPATH": src, **env}, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        return "timeout", f"still running after {SERVE_TIMEOUT} s (a server started?): {e.stdout or ''}{e.stderr or ''}"
    return p.returncode, p.stderr + ("\nSTARTED" if "playground" in p.stdout else "")


@pytest.fixture(scope="module")
def serve_results(places, tmp_path_factory):
    """Every serve case, four subprocesses at a time; {case id: (exit code or "timeout", stderr)}."""
    new = tmp_path_factory.mktemp("serve_new") / "new"
    subs = {k: str(v) for k, v in places.items()} | {"new": str(new)}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        subs["busy"] = str(busy.getsockname()[1])
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {name: pool.submit(_serve, [a.format(**subs) for a in cmd.split()], env)
                       for name, cmd, env, _, _ in SERVE_CASES}
            return {name: f.result() for name, f in futures.items()}


def test_serve_cases_are_counted():
    assert len({c[0] for c in SERVE_CASES}) == len(SERVE_CASES) >= 15
    assert not {c[0] for c in SERVE_CASES} & {c[0] for c in CASES}


@pytest.mark.parametrize("name,cmd,env,fragment,code", SERVE_CASES, ids=[c[0] for c in SERVE_CASES])
def test_serve_bad_input_is_refused_before_a_server_starts(serve_results, name, cmd, env, fragment, code):
    got, err = serve_results[name]
    assert "Traceback" not in err
    assert got == code, f"exit {got}, stderr: {err}"
    assert fragment.lower() in err.lower(), err
    assert "STARTED" not in err  # stdout said a server was starting
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert len(lines) == 1, f"not one line: {err}"
