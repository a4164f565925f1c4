"""GGUF export: a decoder written with `llmcycle export --to gguf` and read back by llmcycle's own GGUF
importer gives the same logits and greedy tokens (f32 exactly; f16 and Q8_0 closely); the tokenizer,
special ids and chat template come along; GPT-2-style runs are refused. llama.cpp's own reading is
checked when llama-cpp-python is importable (opt-in: it compiles llama.cpp)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gguf")

from conftest import tiny_model  # noqa: E402
from llmcycle.cli import main  # noqa: E402
from llmcycle.config import RunConfig, TrainConfig  # noqa: E402
from llmcycle.hub.importer import import_model  # noqa: E402
from llmcycle.inference.generate import generate_ids  # noqa: E402
from llmcycle.inference.sampling import SamplingConfig  # noqa: E402
from llmcycle.rundir import config_path, load_model, load_tokenizer  # noqa: E402
from test_serve import make_run  # noqa: E402

PROMPT = [0, 72, 105, 33, 10, 200, 150, 99]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("gguf_run"), seed=3)  # tied head, multi-head attention


@pytest.fixture(scope="module")
def gqa_run(tmp_path_factory):
    from safetensors.torch import save_model

    from llmcycle.models import build_model
    from llmcycle.rundir import WEIGHTS, checkpoints_dir

    root = make_run(tmp_path_factory.mktemp("gguf_gqa"))  # GQA and an untied head (output.weight)
    m = tiny_model(vocab_size=300, max_seq_len=96, n_kv_head=2, tie_embeddings=False, d_model=64)
    RunConfig(model=m, train=TrainConfig(seq_len=96, max_steps=1)).save(config_path(root))
    torch.manual_seed(5)
    save_model(build_model(m), str(checkpoints_dir(root) / "step_0" / WEIGHTS))
    return root


def _roundtrip(run, tmp_path, kind):
    out = tmp_path / f"model.{kind}.gguf"
    assert main(["export", "--run", str(run), "--to", "gguf", str(out), "--gguf-type", kind]) == 0
    back = tmp_path / f"back_{kind}"
    import_model(str(out), back, overwrite=True)
    a, _ = load_model(run)
    b, _ = load_model(back)
    with torch.no_grad():
        la, lb = a(torch.tensor([PROMPT]))[0], b(torch.tensor([PROMPT]))[0]
    return out, back, a, b, la, lb


@pytest.mark.parametrize("which", ["run", "gqa_run"])
def test_f32_round_trip_is_exact(which, request, tmp_path):
    run = request.getfixturevalue(which)
    _, back, a, b, la, lb = _roundtrip(run, tmp_path, "f32")
    assert torch.allclose(la, lb, atol=1e-5, rtol=0), (la - lb).abs().max()
    greedy = SamplingConfig(temperature=0)
    assert generate_ids(a, [PROMPT], 20, greedy) == generate_ids(b, [PROMPT], 20, greedy)
    ta, tb = load_tokenizer(run), load_tokenizer(back)
    text = "Hello, <|im_start|> wörld 123!"
    assert tb.encode(text) == ta.encode(text) and (tb.bos_id, tb.eos_id) == (ta.bos_id, ta.eos_id)
    from llmcycle.inference.chat import prompt_style

    sa, sb = prompt_style(run, ta), prompt_style(back, tb)
    assert sb.template == sa.template and sb.add_bos == sa.add_bos


@pytest.mark.parametrize("kind,tol", [("f16", 2e-3), ("q8_0", 3e-2)])
def test_f16_and_q8_0_are_close_and_smaller(gqa_run, tmp_path, kind, tol):
    out, _, _, _, la, lb = _roundtrip(gqa_run, tmp_path, kind)
    f32 = tmp_path / "f32.gguf"
    main(["export", "--run", str(gqa_run), "--to", "gguf", str(f32)])
    assert out.stat().st_size < 0.7 * f32.stat().st_size
    err = (la - lb).abs().max() / la.abs().max()
    assert err < tol, err


def test_gpt2_style_runs_are_refused(tmp_path, capsys):
    from safetensors.torch import save_model

    from llmcycle.models import build_model
    from llmcycle.rundir import WEIGHTS, checkpoints_dir

    root = make_run(tmp_path / "gpt2")
    m = tiny_model(vocab_size=300, max_seq_len=96, pos_emb="learned", norm="layernorm", mlp="gelu", bias=True)
    RunConfig(model=m, train=TrainConfig(seq_len=96, max_steps=1)).save(config_path(root))
    save_model(build_model(m), str(checkpoints_dir(root) / "step_0" / WEIGHTS))
    assert main(["export", "--run", str(root), "--to", "gguf", str(tmp_path / "x.gguf")]) == 2
    assert "--to hf" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["run", "gqa_run"])
def test_llama_cpp_gives_the_same_greedy_tokens(which, request, tmp_path):
    """llama.cpp (llama-cpp-python) reads the exported f32 file and decodes greedily what llmcycle
    decodes on the same weights: tied head and multi-head attention, untied head and grouped-query."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (opt-in: .[llamacpp])")
    import json
    import shutil
    import subprocess
    import sys

    from llmcycle.data.tokenizer import train_bpe
    from llmcycle.rundir import tokenizer_path

    run = tmp_path / "run"
    shutil.copytree(request.getfixturevalue(which), run)
    # llama.cpp refuses a byte-level BPE vocabulary without merges (the fixtures' byte tokenizer): a
    # trained one, as every real run has, within the model's 300 rows
    text = "the cat sat on the mat; the dog sat on the log. " * 50
    tok = train_bpe([text], 300)
    assert tok.vocab_size <= 300
    tok.save(tokenizer_path(run))  # replaces the byte tokenizer
    out = tmp_path / "model.gguf"
    assert main(["export", "--run", str(run), "--to", "gguf", str(out)]) == 0
    a, _ = load_model(run)
    want = generate_ids(a, [PROMPT], 16, SamplingConfig(temperature=0))[0]
    # in a child process: a llama.cpp build whose CPU code this machine refuses (e.g. AMX tiles where
    # the kernel does not grant them) dies of a signal, which would otherwise take pytest down with it
    code = (f"import json, llama_cpp\n"
            f"llm = llama_cpp.Llama(model_path={str(out)!r}, n_ctx=96, n_threads=1, verbose=False)\n"
            f"got = []\n"
            f"for t in llm.generate({PROMPT!r}, temp=0.0, top_k=1, reset=True):\n"
            f"    got.append(t)\n"
            f"    if len(got) == 16:\n"
            f"        break\n"
            f"print(json.dumps(got))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (f"llama.cpp failed (exit {proc.returncode}; a negative one is a signal: a build "
                                  f"for CPU features this machine refuses?): {proc.stderr[-1500:]}")
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == want
