"""Model adapters and the evaluation loop on tiny models: log-likelihood ranking equals an explicit
per-choice computation, batched scoring and generation equal one-at-a-time (padding), seeded
reproducibility, every llmcycle family, tiny Hugging Face models saved locally, and `llmcycle eval`."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_model
from llmcycle.data.tokenizer import byte_tokenizer
from llmcycle.evaluation.adapters import llmcycle_adapter
from llmcycle.evaluation.hf_adapters import hf_adapter
from llmcycle.evaluation.icl import EvalConfig, evaluate_task
from llmcycle.evaluation.tasks import Task
from llmcycle.inference.sampling import SamplingConfig
from llmcycle.models import build_model

GREEDY = SamplingConfig(temperature=0.0)
PAIRS = [("Review: a fine film\nSentiment:", " positive"), ("Review: a fine film\nSentiment:", " negative"),
         ("Review: dull\nSentiment:", " positive"), ("Q: 2+2?\nA:", " 4"), ("x", " a much longer continuation")]
PROMPTS = ["def f(x):\n    return", "Hello", "import os\nimport sys\n\ndef main():"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (two spin against each other on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def _model(tok, family="decoder", **kw):
    torch.manual_seed(0)
    return build_model(tiny_model(vocab_size=tok.vocab_size, family=family, max_seq_len=128, **kw))


@pytest.fixture(scope="module")
def decoder(tok):
    return llmcycle_adapter(_model(tok), tok)


def explicit_causal(model, ids_ctx, ids_cont) -> float:
    """Sum of log p(cont | ctx), one sequence, no batching, no padding."""
    seq = torch.tensor([ids_ctx + ids_cont])
    with torch.no_grad():
        logits = model(seq)[0] if not hasattr(model, "config") else model(seq).logits
    lp = F.log_softmax(logits[0, :-1].float(), -1)
    n = len(ids_ctx)
    return float(sum(lp[n - 1 + j, t] for j, t in enumerate(ids_cont)))


def test_decoder_loglikelihood_equals_explicit_and_batched_equals_single(decoder, tok):
    got = decoder.loglikelihood(PAIRS)
    for (ctx, cont), (lp, n, _) in zip(PAIRS, got):
        c_ids, x_ids = tok.encode(ctx, bos=True), tok.encode(cont)
        assert n == len(x_ids)
        assert lp == pytest.approx(explicit_causal(decoder.model, c_ids, x_ids), abs=1e-4)
    single = [decoder.loglikelihood([p])[0] for p in PAIRS]
    for (a, na, ga), (b, nb, gb) in zip(got, single):
        assert a == pytest.approx(b, abs=1e-4) and na == nb and ga == gb


def test_decoder_batched_generation_equals_one_at_a_time_and_seeds_reproduce(decoder):
    batched = decoder.generate(PROMPTS, 12, GREEDY, [])
    assert batched == [decoder.generate([p], 12, GREEDY, [])[0] for p in PROMPTS]
    hot = SamplingConfig(temperature=1.0, top_k=20)
    a, b = decoder.generate(PROMPTS, 12, hot, [], seed=3), decoder.generate(PROMPTS, 12, hot, [], seed=3)
    assert a == b and a != decoder.generate(PROMPTS, 12, hot, [], seed=4)


def test_stop_strings_cut_the_completion(decoder):
    full = decoder.generate(PROMPTS[:1], 16, GREEDY, [])[0]
    stop = full[3:5]
    cut = decoder.generate(PROMPTS[:1], 16, GREEDY, [stop])[0]
    assert cut == full[:full.find(stop)] and stop not in cut


def test_encoder_scores_label_words_through_the_mask(tok):
    enc = llmcycle_adapter(_model(tok, "encoder"), tok)
    got = enc.loglikelihood(PAIRS)
    for (ctx, cont), (lp, n, _) in zip(PAIRS, got):
        c_ids, x_ids = tok.encode(ctx), tok.encode(cont)
        seq = torch.tensor([c_ids + [tok.mask_id] * len(x_ids)])
        with torch.no_grad():
            logp = F.log_softmax(enc.model(seq)[0][0].float(), -1)
        assert lp == pytest.approx(float(sum(logp[len(c_ids) + j, t] for j, t in enumerate(x_ids))), abs=1e-4)
    single = [enc.loglikelihood([p])[0][0] for p in PAIRS]
    assert [g[0] for g in got] == pytest.approx(single, abs=1e-4)
    with pytest.raises(ValueError, match="does not generate"):
        enc.generate(PROMPTS, 4, GREEDY, [])


def test_seq2seq_target_loglikelihood_and_generation(tok):
    from llmcycle.data.objectives import TokenRoles

    s2s = llmcycle_adapter(_model(tok, "seq2seq"), tok)
    start = TokenRoles.from_tokenizer(tok).decoder_start_id
    got = s2s.loglikelihood(PAIRS)
    for (ctx, cont), (lp, n, _) in zip(PAIRS, got):
        src, tgt = tok.encode(ctx), tok.encode(cont.lstrip())
        with torch.no_grad():
            logits, _ = s2s.model(torch.tensor([src]), torch.tensor([[start] + tgt[:-1]]))
        logp = F.log_softmax(logits[0].float(), -1)
        assert lp == pytest.approx(float(sum(logp[j, t] for j, t in enumerate(tgt))), abs=1e-4)
    single = [s2s.loglikelihood([p])[0][0] for p in PAIRS]
    assert [g[0] for g in got] == pytest.approx(single, abs=1e-4)
    assert s2s.generate(PROMPTS, 8, GREEDY, []) == [s2s.generate([p], 8, GREEDY, [])[0] for p in PROMPTS]


# ---------------------------------------------------------------- tiny Hugging Face models


def _hf_tokenizer(tok, path):
    from transformers import PreTrainedTokenizerFast

    tok.save(path)
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), bos_token="<|bos|>",
                                     eos_token="<|eos|>", pad_token="<|pad|>")
    hf_tok.save_pretrained(path)
    return hf_tok


@pytest.fixture(scope="module")
def hf_causal(tok, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("hf_llama")
    _hf_tokenizer(tok, path)
    cfg = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    return hf_adapter(str(path))


@pytest.fixture(scope="module")
def hf_t5(tok, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("hf_t5")
    _hf_tokenizer(tok, path)
    cfg = transformers.T5Config(vocab_size=tok.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                decoder_start_token_id=tok.pad_id, pad_token_id=tok.pad_id, eos_token_id=tok.eos_id)
    torch.manual_seed(0)
    transformers.T5ForConditionalGeneration(cfg).save_pretrained(path)
    return hf_adapter(str(path))


def test_hf_causal_loglikelihood_and_batched_generation(hf_causal):
    assert hf_causal.kind == "causal" and hf_causal.max_seq_len == 128
    got = hf_causal.loglikelihood(PAIRS)
    for (ctx, cont), (lp, n, _) in zip(PAIRS, got):
        c_ids = hf_causal.encode(ctx)
        x_ids = hf_causal.encode(ctx + cont)[len(c_ids):]
        assert lp == pytest.approx(explicit_causal(hf_causal.model, c_ids, x_ids), abs=1e-4)
    single = [hf_causal.loglikelihood([p])[0][0] for p in PAIRS]
    assert [g[0] for g in got] == pytest.approx(single, abs=1e-4)
    batched = hf_causal.generate(PROMPTS, 10, GREEDY, [])
    assert batched == [hf_causal.generate([p], 10, GREEDY, [])[0] for p in PROMPTS]
    hot = SamplingConfig(temperature=1.0, top_p=0.9)
    assert hf_causal.generate(PROMPTS, 10, hot, [], seed=1) == hf_causal.generate(PROMPTS, 10, hot, [], seed=1)


def test_hf_seq2seq_loglikelihood_and_batched_generation(hf_t5):
    assert hf_t5.kind == "seq2seq"
    got = hf_t5.loglikelihood(PAIRS)
    for (ctx, cont), (lp, n, _) in zip(PAIRS, got):
        src, tgt = hf_t5.encode(ctx), hf_t5.encode(cont.lstrip(), False)
        with torch.no_grad():
            logits = hf_t5.model(input_ids=torch.tensor([src]), labels=torch.tensor([tgt])).logits
        logp = F.log_softmax(logits[0].float(), -1)
        assert lp == pytest.approx(float(sum(logp[j, t] for j, t in enumerate(tgt))), abs=1e-4)
    single = [hf_t5.loglikelihood([p])[0][0] for p in PAIRS]
    assert [g[0] for g in got] == pytest.approx(single, abs=1e-4)
    assert hf_t5.generate(PROMPTS, 8, GREEDY, []) == [hf_t5.generate([p], 8, GREEDY, [])[0] for p in PROMPTS]


# ---------------------------------------------------------------- the evaluation loop and the command

REVIEWS = [("a fine , moving film", "1"), ("dull and lifeless", "0"), ("great fun", "1"), ("a mess", "0"),
           ("touching and wise", "1"), ("boring", "0"), ("lovely", "1"), ("awful acting", "0")]


def _write_tasks(tmp_path):
    (tmp_path / "reviews.txt").write_text("".join(f"{y} {x}\n" for x, y in REVIEWS))
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"q": f"{i}+{i}", "a": f"#### {2 * i}"}) + "\n"
                                               for i in range(6)))
    choice = dict(name="tiny_sent", kind="choice", metric="accuracy",
                  data={"path": "reviews.txt", "format": "label-text"}, template="Review: {text}\nSentiment:",
                  answer=" {choice}", label_field="label", choices={"0": "negative", "1": "positive"})
    gen = dict(name="tiny_qa", kind="generate", metric="exact_match", data={"path": "qa.jsonl"},
               template="Q: {q}\nA:", answer=" {a}", references=["a"], max_new_tokens=6, stop=["\n"])
    for d in (choice, gen):
        (tmp_path / f"{d['name']}.json").write_text(json.dumps(d))
    return Task.from_dict(choice, root=str(tmp_path)), Task.from_dict(gen, root=str(tmp_path))


def test_evaluate_choice_task_matches_explicit_ranking(decoder, tok, tmp_path):
    choice, _ = _write_tasks(tmp_path)
    res = evaluate_task(choice, decoder, EvalConfig(shots=[0, 2], batch_size=3, seed=1))
    assert [c["column"] for c in res["columns"]] == ["loglik/0-shot", "loglik/2-shot"]
    for col in res["records"].values():
        for rec in col:
            ctx = tok.encode(rec["prompt"], bos=True)
            mean = [explicit_causal(decoder.model, ctx, tok.encode(" " + w)) / len(tok.encode(" " + w))
                    for w in ("negative", "positive")]
            assert rec["prediction"] == ["negative", "positive"][max(range(2), key=mean.__getitem__)]
            assert rec["ranking_score"] == pytest.approx(mean, abs=1e-4)
            assert rec["score"]["accuracy"] == 100.0 * (rec["prediction"] == rec["reference"])
            assert str(rec["index"]) not in rec["exemplars"] and len(rec["exemplars"]) == rec["used"] <= rec["shots"]
            assert rec["prompt_tokens"] == len(ctx) and not rec["overflow"]
    acc = [sum(r["score"]["accuracy"] for r in col) / len(col) for col in res["records"].values()]
    assert [c["accuracy"] for c in res["columns"]] == pytest.approx(acc)
    again = evaluate_task(choice, decoder, EvalConfig(shots=[0, 2], batch_size=1, seed=1))
    assert [c["accuracy"] for c in again["columns"]] == [c["accuracy"] for c in res["columns"]]
    with pytest.raises(ValueError, match="pool has only 7"):
        evaluate_task(choice, decoder, EvalConfig(shots=[8]))


def test_evaluate_generation_sweep_is_reproducible(decoder, tmp_path):
    _, gen = _write_tasks(tmp_path)
    cfg = EvalConfig(shots=[0, 1], limit=4, seed=5, batch_size=2,
                     settings=[SamplingConfig(), SamplingConfig(1.0, top_p=0.9)])
    a, b = evaluate_task(gen, decoder, cfg), evaluate_task(gen, decoder, cfg)
    def strip(r):
        return [{k: v for k, v in c.items() if k not in ("seconds", "examples_per_s")} for c in r["columns"]]

    assert strip(a) == strip(b) and a["records"] == b["records"]
    assert [c["column"] for c in a["columns"]] == ["greedy/0-shot", "greedy/1-shot", "t=1,p=0.9/0-shot",
                                                   "t=1,p=0.9/1-shot"]
    rec = a["records"]["greedy/1-shot"][0]
    assert rec["prompt"].endswith("Q: 0+0\nA:") and rec["reference"] == "#### 0" and "\n" not in rec["completion"]
    assert {"exact_match", "distinct_1", "distinct_2", "prompt_tokens", "exemplars"} <= set(a["columns"][0])


def test_eval_command_writes_json_and_table(tok, tmp_path, capsys):
    from safetensors.torch import save_model

    from llmcycle.cli import main
    from llmcycle.config import RunConfig, TrainConfig

    run = tmp_path / "run"
    model = _model(tok)
    RunConfig(model=model.cfg, train=TrainConfig(seq_len=64, max_steps=1)).save(run / "config.json")
    tok.save(run / "data")
    (run / "checkpoints" / "step_1").mkdir(parents=True)
    save_model(model, str(run / "checkpoints" / "step_1" / "model.safetensors"))
    _write_tasks(tmp_path)
    task = str(tmp_path / "tiny_sent.json")
    assert main(["eval", "--run", str(run), "--task", task, "--shots", "0,1", "--limit", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| tiny_sent (5 examples) | 0-shot | 1-shot |" in out and "exemplars that fit" in out
    saved = json.loads((run / "eval" / "tiny_sent.json").read_text())
    rec = saved["records"]["loglik/1-shot"][0]
    assert {"prompt", "completion", "reference", "score", "prompt_tokens", "exemplars"} <= set(rec)
    assert (run / "eval" / "tiny_sent.md").read_text().startswith("# tiny_sent")
    assert main(["eval", "--run", str(run), "--task", task, "--shots", "0,9", "--quiet"]) == 2
    assert "pool has only 7" in capsys.readouterr().err
    assert main(["eval", "--hf", "x", "--task", task]) == 2  # --hf needs --out

    def completions(*flags):
        qa = str(tmp_path / "tiny_qa.json")
        assert main(["eval", "--run", str(run), "--task", qa, "--shots", "1", "--limit", "4", "--quiet", *flags]) == 0
        saved = json.loads((run / "eval" / "tiny_qa.json").read_text())
        return saved["model"], [r["completion"] for r in saved["records"]["greedy/1-shot"]]

    eager = completions()[1]
    assert completions("--compile")[1] == eager  # the compiled decoding step, padded batch: same answers
    name, _ = completions("--quantize", "int8")
    assert name.endswith("run int8")
    assert main(["eval", "--hf", "x", "--out", str(tmp_path), "--task", task, "--quantize", "int4"]) == 2
    assert "apply to llmcycle runs" in capsys.readouterr().err


def test_cut_completion_stop_strings_and_settings():
    from llmcycle.evaluation.interface import cut_completion, stop_hit
    from llmcycle.evaluation.icl import SWEEP

    dec = lambda ids: "".join(map(chr, ids))  # noqa: E731
    assert cut_completion([10, 65, 66, 10, 67], dec, set(), ["\n"]) == ("AB", 5)  # leading newline is not the end
    assert cut_completion([65, 0, 66], dec, {0}, []) == ("A", 1)
    assert not stop_hit("\n\nabc", ["\n"]) and stop_hit("\nab\nc", ["\n"])
    assert [s.describe(short=True) for s in SWEEP] == ["greedy", "t=0.7,k=40", "t=1,p=0.9", "t=1.5,p=0.9"]
    assert SamplingConfig.parse("t=0.7,k=40") == SamplingConfig(0.7, top_k=40)
    assert SamplingConfig.parse("greedy") == SamplingConfig()
    with pytest.raises(ValueError, match="bad setting"):
        SamplingConfig.parse("temp=1")
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        SamplingConfig.parse("t=-1")


CHAT = ("{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}")


def test_chat_prompts_score_the_reply(tok, tmp_path):
    pytest.importorskip("jinja2")
    (tmp_path / "chat_template.jinja").write_text(CHAT)
    ad = llmcycle_adapter(_model(tok), tok, tmp_path)
    ad.use_chat(tmp_path)
    ids = ad.encode("Review: fine\nSentiment:")
    assert ids[0] == tok.bos_id and ids[-len(tok.encode("assistant\n")):] == tok.encode("assistant\n")
    assert tok.decode(ids) == "<|bos|>user\nReview: fine\nSentiment:<|eos|>\n<|bos|>assistant\n"
    (lp, n, _), = ad.loglikelihood([("Review: fine\nSentiment:", " positive")])
    assert n == len(tok.encode("positive"))
    assert lp == pytest.approx(explicit_causal(ad.model, ids, tok.encode("positive")), abs=1e-4)
    assert len(ad.generate(["hi"], 4, GREEDY, [])) == 1
    with pytest.raises(ValueError, match="no chat template"):
        llmcycle_adapter(_model(tok), tok, tmp_path / "nothing").use_chat(tmp_path / "nothing")
