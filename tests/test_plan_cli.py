"""`llmcycle plan` surface: flags, JSON keys, errors that list choices, the PNG, HF config.json input,
run directories, and speed (no torch import for published models)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from llmcycle.plan import cli
from llmcycle.plan.shape import from_hf_config, param_groups

TOP_KEYS = {"schema", "units", "model", "inference", "training", "compute", "scaling"}
DEVICE_KEYS = {"weights_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "total_bytes", "fits"}


def run_cli(*argv: str, capsys) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def test_json_keys_are_stable(capsys):
    out = run_cli("--preset", "gpt3-175b", "--tokens", "300e9", "--budget-flops", "5.76e23", "--gpus", "1024", "--tp", "8",
                  "--pp", "8", "--unique-tokens", "300e9", "--price", "2", "--json", capsys=capsys)
    plan = json.loads(out)
    assert set(plan) == TOP_KEYS and plan["schema"] == "llmcycle.plan/1"
    assert set(plan["training"]["per_device"]) == {"ddp", "zero1", "zero2", "zero3"}
    assert all(set(v) == DEVICE_KEYS for v in plan["training"]["per_device"].values())
    assert set(plan["inference"]["per_dtype"]) == {"fp32", "bf16", "int8", "int4"}
    assert plan["compute"]["pf_days"] == pytest.approx(3637.5, rel=1e-3)
    assert set(plan["scaling"]["laws"]) == {"chinchilla-20x", "chinchilla", "chinchilla-printed", "epoch", "kaplan"}
    assert plan["scaling"]["data"]["verdict"] == "data-bound"


def test_zero_paper_example_from_the_cli(capsys):
    plan = json.loads(run_cli("--params", "7.5e9", "--gpus", "64", "--zero", "1", "--json", capsys=capsys))
    got = {k: round(v["total_bytes"] / 1e9, 1) for k, v in plan["training"]["per_device"].items()}
    assert got == {"ddp": 120.0, "zero1": 31.4, "zero2": 16.6, "zero3": 1.9}
    assert plan["training"]["settings"]["highlighted_strategy"] == "zero1"


def test_tables_state_units(capsys):
    out = run_cli("--preset", "llama2-7b", "--tokens", "2e12", "--gpu", "h100", "--gpus", "16", capsys=capsys)
    for s in ("GB (", "GiB)", "FLOPs", "PF-days", "GPU-h", "days", "parameters"):
        assert s in out


@pytest.mark.parametrize("argv,words", [
    (["--preset", "gpt5"], ["unknown preset", "gpt3-175b"]),
    (["--params", "1e9", "--dtype", "fp8"], ["fp8", "fp32", "bf16"]),
    (["--layers", "2", "--d-model", "100", "--heads", "3", "--vocab", "100"], ["not divisible", "n_head among"]),
    (["--params", "1e9", "--gpus", "0"], ["--gpus must be >= 1"]),
    (["--params", "1e9", "--gpu", "tpu"], ["unknown GPU", "h100-80gb"]),
    (["--params", "1e9", "--optimizer", "lion"], ["unknown optimizer", "adamw"]),
    (["--params", "1e9", "--gpus", "12", "--tp", "8"], ["multiple of tp x pp"]),
    ([], ["give exactly one model"]),
])
def test_impossible_input_names_valid_choices(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and all(w in err for w in words), err


def test_plot_png(tmp_path, capsys):
    out = tmp_path / "mem.png"
    run_cli("--preset", "llama2-13b", "--gpus", "8", "--plot", str(out), capsys=capsys)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


HF = {
    "llama2-7b.json": ({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
                        "num_hidden_layers": 32, "num_key_value_heads": 32, "vocab_size": 32000,
                        "max_position_embeddings": 4096, "tie_word_embeddings": False}, 6_738_415_616),
    "mistral-7b.json": ({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
                         "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 32000,
                         "max_position_embeddings": 32768, "tie_word_embeddings": False}, 7_241_732_096),
    "gpt2.json": ({"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "vocab_size": 50257,
                   "activation_function": "gelu_new"}, 124_439_808),
    "pythia-160m.json": ({"model_type": "gpt_neox", "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                          "num_hidden_layers": 12, "vocab_size": 50304, "max_position_embeddings": 2048,
                          "tie_word_embeddings": False}, 162_322_944),
    "bloom-560m.json": ({"model_type": "bloom", "hidden_size": 1024, "n_layer": 24, "n_head": 16, "vocab_size": 250880},
                        559_214_592),
    "bert.json": ({"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                   "intermediate_size": 3072, "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2},
                  109_482_240),
    "t5-small.json": ({"model_type": "t5", "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_decoder_layers": 6,
                       "num_heads": 8, "vocab_size": 32128, "feed_forward_proj": "relu", "relative_attention_num_buckets": 32},
                      60_506_624),
}


@pytest.mark.parametrize("fname", list(HF))
def test_hf_config_counts_match_hugging_face(fname, tmp_path):
    d, expected = HF[fname]
    (tmp_path / fname).write_text(json.dumps(d))
    assert param_groups(from_hf_config(tmp_path / fname))["total"] == expected


def test_run_directory_is_counted_exactly(tmp_path, capsys):
    pytest.importorskip("torch")
    from llmcycle.config import ModelConfig, RunConfig
    from llmcycle.models.accounting import count_params

    cfg = ModelConfig(vocab_size=1000, d_model=64, n_head=4, n_layer=2, max_seq_len=256)
    RunConfig(model=cfg).save(tmp_path / "config.json")
    plan = json.loads(run_cli("--run", str(tmp_path), "--gpu", "l4", "--gpus", "1", "--dtype", "fp32", "--json", capsys=capsys))
    assert plan["model"]["params_exact"] and plan["model"]["params"]["total"] == count_params(cfg)["total"]


def test_answers_fast_without_torch():
    code = ("import sys, time; t = time.perf_counter(); from llmcycle.plan.cli import main; "
            "main(['--preset', 'llama3-70b', '--tokens', '15e12', '--budget-gpu-hours', '6.4e6', '--gpu', 'h100', '--json']); "
            "print(time.perf_counter() - t, 'torch' in sys.modules, file=sys.stderr)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    elapsed, torch_loaded = out.stderr.split()[-2:]
    assert torch_loaded == "False" and float(elapsed) < 0.5
    assert time.perf_counter() - t0 < 5  # interpreter start included, on a shared CPU


def test_old_flag_names_are_aliases(capsys):
    dims = ["--layers", "4", "--d-model", "256", "--heads", "4", "--vocab", "1000", "--json"]
    new = json.loads(run_cli(*dims, "--d-ff", "700", "--max-seq-len", "512", "--seq-len", "128", "--infer-seq-len", "64",
                             capsys=capsys))
    old = json.loads(run_cli(*dims, "--ffn", "700", "--context", "512", "--seq", "128", "--infer-seq", "64", capsys=capsys))
    assert new == old
    assert new["model"]["shape"]["d_ff"] == 700 and new["model"]["shape"]["max_seq_len"] == 512
    assert new["training"]["settings"]["seq"] == 128 and new["inference"]["seq"] == 64


def test_hf_config_planning_imports_no_torch(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(HF["llama2-7b.json"][0]))
    code = ("import sys; from llmcycle.plan.cli import main; "
            f"main(['--hf-config', {str(tmp_path)!r}, '--json']); print('torch' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.split()[-1] == "False"


@pytest.mark.parametrize("fname", ["llama2-7b.json", "mistral-7b.json", "gpt2.json"])
def test_the_planner_and_the_importer_read_a_config_alike(fname):
    """hub/hf_config.py reads one config.json two ways: the importer's exact ModelConfig and the
    planner's ModelShape must describe the same model."""
    from llmcycle.hub.hf_config import model_config_from_hf
    from llmcycle.plan.shape import from_config, from_hf_dict

    d = HF[fname][0]
    via_config, direct = from_config(model_config_from_hf(d)), from_hf_dict(d)
    assert param_groups(via_config) == param_groups(direct)
    assert (via_config.ffn, via_config.max_seq_len) == (direct.ffn, direct.max_seq_len)
