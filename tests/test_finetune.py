"""`llmcycle finetune`: the loss mask, packing, LoRA (zero-init, frozen base, merge), exact resume, a tiny SFT
run that learns a mapping, and bad input. Tiny byte-level models made on the spot stand in for real ones."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model
from safetensors.torch import load_file

from llmcycle.cli import build_parser
from llmcycle.config import RunConfig, TrainConfig
from llmcycle.data.tokenizer import byte_tokenizer
from llmcycle.finetune.data import IGNORE, DataSpec, Encoder, Rows, load_examples
from llmcycle.finetune.lora import LoraSpec, add_lora, count_params, merge_into
from llmcycle.inference.chat import PromptStyle
from llmcycle.models import build_model
from llmcycle import checkpoint
from llmcycle.rundir import latest_checkpoint, load_model, save_config, weights_path

CHAT = ("{% for m in messages %}{{ bos_token + m['role'] + '\n' + m['content'] + eos_token + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ bos_token + 'assistant\n' }}{% endif %}")


def _base(path, chat=False, family="decoder"):
    tok = byte_tokenizer()
    (path / "data").mkdir(parents=True)
    tok.save(path / "data" / "tokenizer.json")
    cfg = RunConfig(model=tiny_model(vocab_size=tok.vocab_size, family=family),
                    train=TrainConfig(max_steps=1, seq_len=32))
    save_config(path, cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    checkpoint.save(path, 0, model, torch.optim.AdamW(model.parameters()), {"step": 0}, keep=1, sharded=False)
    if chat:
        (path / "chat_template.jinja").write_text(CHAT)
    return path


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    return _base(tmp_path_factory.mktemp("base"), chat=True)


def _reverse_data(path, n=300, length=4, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            s = "".join(rng.choice("abcdefgh") for _ in range(length))
            f.write(json.dumps({"prompt": f"{s}>", "completion": s[::-1]}) + "\n")
    return path


def _finetune(*argv):
    args = build_parser().parse_args(["finetune", "--quiet", "--seq-len", "32", "--eval-every", "1000", *map(str, argv)])
    return args.func(args)


def _style(add_bos=True, template=None):
    tok = byte_tokenizer()
    return tok, PromptStyle(add_bos=add_bos, template=template, bos_token="<|bos|>", eos_token="<|eos|>")


# ---------------------------------------------------------------- loss mask and packing


def test_masked_loss_equals_the_loss_on_completion_tokens_by_hand():
    tok, style = _style()
    enc = Encoder(tok, style, DataSpec("x.jsonl"))
    examples = [enc.pair("abc=", "cba"), enc.pair("hello=", "olleh")]
    rows = Rows(examples, 24, pack=False, pad_id=tok.pad_id)
    batch = rows.get([0, 1])
    torch.manual_seed(0)
    model = build_model(tiny_model(vocab_size=tok.vocab_size))
    logits, loss = model(**batch)
    # by hand: positions whose *next* token is a completion token (the completion and eos), nothing else
    terms = []
    for b, ex in enumerate(examples):
        n_prompt = ex.mask.index(True)
        for t in range(n_prompt - 1, len(ex.ids) - 1):
            terms.append(F.cross_entropy(logits[b, t].float(), torch.tensor(ex.ids[t + 1]), reduction="none"))
    assert len(terms) == (3 + 1) + (5 + 1)
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-6)
    assert (batch["targets"] != IGNORE).sum() == len(terms)
    # --train-on all: every next token counts
    all_ = Encoder(tok, style, DataSpec("x.jsonl", train_on="all")).record({"prompt": "abc=", "completion": "cba"}, "x:1")
    assert all(all_.mask)


def test_packed_rows_keep_attention_inside_each_example():
    tok, style = _style()
    enc = Encoder(tok, style, DataSpec("x.jsonl"))
    examples = [enc.pair("ab=", "ba"), enc.pair("hello=", "olleh"), enc.pair("xyz=", "zyx")]
    packed = Rows(examples, 32, pack=True, pad_id=tok.pad_id, seed=0)
    assert len(packed) == 1  # 6 + 12 + 8 input tokens share one row of 32
    torch.manual_seed(0)
    model = build_model(tiny_model(vocab_size=tok.vocab_size)).eval()
    batch = packed.get([0])
    logits, loss = model(**batch)
    at, alone_losses = 0, []
    for k in packed.rows[0]:  # each example alone, unpacked: the same logits where it sits in the row
        x, y = packed.pieces[k]
        ref, ref_loss = model(torch.tensor([x]), targets=torch.tensor([y]))
        torch.testing.assert_close(logits[0, at:at + len(x)], ref[0], atol=2e-5, rtol=1e-4)
        alone_losses += [F.cross_entropy(ref[0].float(), torch.tensor(y), reduction="sum").item()]
        at += len(x)
    n_targets = (batch["targets"] != IGNORE).sum().item()
    assert loss.item() == pytest.approx(sum(alone_losses) / n_targets, rel=1e-5)
    # the padded layout gives the same loss (one example per row, right padding, no mask needed)
    padded = Rows(examples, 32, pack=False, pad_id=tok.pad_id)
    assert model(**padded.get([0, 1, 2]))[1].item() == pytest.approx(loss.item(), rel=1e-5)


def test_chat_examples_train_on_assistant_turns_only():
    tok, style = _style(add_bos=False, template=CHAT)
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "again"}, {"role": "assistant", "content": "ok!"}]
    ex = Encoder(tok, style, DataSpec("x.jsonl")).chat(msgs, "x.jsonl:1")
    learned = tok.decode([t for t, m in zip(ex.ids, ex.mask) if m])
    assert learned == "yo<|eos|>\nok!<|eos|>\n"  # each reply with its end token, never the user turns or headers


# ---------------------------------------------------------------- LoRA


def test_lora_starts_as_the_base_model_and_merges_exactly():
    cfg = tiny_model()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    before = model(x)[0]
    add_lora(model, LoraSpec(rank=4, dropout=0.0))
    assert torch.equal(model(x)[0], before)  # B = 0: the adapters add nothing at step 0
    trainable, total = count_params(model)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    adapted = model(x)[0]
    assert (adapted - before).abs().max() > 1e-3
    merged = merge_into(build_model(cfg).eval(), model)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged(x)[0], adapted, atol=1e-5, rtol=1e-5)


def test_lora_run_changes_only_adapters_and_merges_to_a_plain_run(base_run, tmp_path):
    data = _reverse_data(tmp_path / "rev.jsonl", n=40)
    out, merged = tmp_path / "lora", tmp_path / "merged"
    assert _finetune("--run", out, "--init-from", base_run, "--data", data, "--method", "lora", "--lora-rank", 4,
                     "--max-steps", 5, "--batch-size", 4, "--lr", "1e-2", "--merge", merged) == 0
    base, tuned = load_file(weights_path(base_run)), load_file(weights_path(out))
    adapters = load_file(out / "adapter.safetensors")
    assert adapters and all("lora_" in k for k in adapters)
    assert any(v.abs().max() > 0 for k, v in adapters.items() if "lora_B" in k)  # the adapters trained
    for name, t in tuned.items():
        if "lora_" not in name:  # everything else is the base, bit for bit
            assert torch.equal(t, base[name.replace(".base_layer", "")]), name
    spec = json.loads((out / "finetune.json").read_text())
    assert spec["result"]["trainable_params"] == sum(v.numel() for v in adapters.values())
    assert f"| trainable parameters | {spec['result']['trainable_params']:,} of" in (out / "report.md").read_text()
    with pytest.raises(ValueError, match="merge it"):
        load_model(out)  # the LoRA run itself is not a plain model
    plain, _ = load_model(merged)  # ... its merge is, and computes base + adapters
    from llmcycle.finetune.source import load_finetuned

    adapted, _, _ = load_finetuned(out)
    x = torch.randint(0, 292, (2, 12))
    torch.testing.assert_close(plain(x)[0], adapted(x)[0], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- the loop: resume, learning


def test_interrupted_finetune_resumes_bit_for_bit(base_run, tmp_path, monkeypatch):
    from llmcycle.finetune import cli as ft_cli

    data = _reverse_data(tmp_path / "rev.jsonl", n=60)
    flags = ["--init-from", base_run, "--data", data, "--method", "lora", "--lora-rank", 4, "--lora-dropout", 0.1,
             "--max-steps", 8, "--ckpt-every", 3, "--batch-size", 4, "--pack"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert _finetune("--run", a, *flags) == 0
    real = ft_cli.build_source

    def dies_at_step_5(*args):
        source, counts, notes = real(*args)
        get, calls = source.train.get, []

        def get_or_die(ids):
            calls.append(1)
            if len(calls) == 6:
                raise KeyboardInterrupt  # killed after the step-3 checkpoint, mid step 5
            return get(ids)

        source.train.get = get_or_die
        return source, counts, notes

    monkeypatch.setattr(ft_cli, "build_source", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        _finetune("--run", b, *flags)
    monkeypatch.undo()
    assert latest_checkpoint(b).name == "step_000003"
    assert _finetune("--run", b, "--resume") == 0
    wa, wb = load_file(weights_path(a)), load_file(weights_path(b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert load_file(a / "adapter.safetensors").keys() == load_file(b / "adapter.safetensors").keys()


def _completion_accuracy(run, data, tok_run):
    """Teacher-forced argmax accuracy on the held-out completion tokens."""
    tok, style = byte_tokenizer(), PromptStyle(add_bos=True)
    model, _ = load_model(run)
    examples, _ = load_examples(DataSpec(str(data)), tok, style, 33)
    rows = Rows(examples[-30:], 32, pack=False, pad_id=tok.pad_id)
    batch = rows.get(range(len(rows)))
    with torch.no_grad():
        pred = model(batch["idx"])[0].argmax(-1)
    keep = batch["targets"] != IGNORE
    return (pred[keep] == batch["targets"][keep]).float().mean().item()


def test_a_tiny_sft_run_learns_to_reverse_strings(base_run, tmp_path):
    data = _reverse_data(tmp_path / "rev.jsonl", n=300)
    out = tmp_path / "full"
    assert _finetune("--run", out, "--init-from", base_run, "--data", data, "--method", "full", "--lr", "3e-3",
                     "--max-steps", 400, "--batch-size", 16, "--warmup-steps", 5, "--pack", "--eval-every", 400) == 0
    vals = [json.loads(line)["val_loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert vals[-1] < 0.1 * vals[0]  # held-out completion loss: ~5.7 nats -> ~0.2
    before, after = _completion_accuracy(base_run, data, base_run), _completion_accuracy(out, data, base_run)
    assert before < 0.2 and after > 0.9


# ---------------------------------------------------------------- bad input: clear errors, nothing written


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "a", "completion": "b"}', "not json", '{"prompt": "c", "completion": "d"}'], r"rev\.jsonl:2: not valid JSON"),
    (['{"prompt": "a", "completion": "b"}', '{"prompt": "c"}'], r"rev\.jsonl:2: missing field\(s\) \['completion'\]"),
    (['[1, 2]'], r"rev\.jsonl:1: each line must be a JSON object"),
])
def test_bad_lines_are_named_and_nothing_is_written(base_run, tmp_path, lines, message):
    data = tmp_path / "rev.jsonl"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        _finetune("--run", tmp_path / "out", "--init-from", base_run, "--data", data, "--max-steps", 1)
    assert not (tmp_path / "out").exists()


def test_overlong_examples_are_skipped_or_truncated_and_counted(base_run, tmp_path, capsys):
    data = tmp_path / "rev.jsonl"
    rows = [{"prompt": "ab>", "completion": "ba"}] * 6 + [{"prompt": "x>", "completion": "y" * 80},
                                                          {"prompt": "p" * 80, "completion": "q"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok, style = _style()
    kept, counts = load_examples(DataSpec(str(data), overlong="skip"), tok, style, 33)
    assert (len(kept), counts.skipped_long, counts.truncated) == (6, 2, 0)
    kept, counts = load_examples(DataSpec(str(data)), tok, style, 33)
    assert (len(kept), counts.skipped_long, counts.truncated) == (7, 1, 1)  # the long prompt leaves nothing to learn
    assert max(len(e.ids) for e in kept) == 33
    assert _finetune("--run", tmp_path / "out", "--init-from", base_run, "--data", data, "--max-steps", 1) == 0
    out = capsys.readouterr().out
    assert "1 truncated" in out and "1 skipped as longer" in out and "warning:" in out


def test_wrong_base_targets_or_template_are_clear_errors(base_run, tmp_path):
    data = _reverse_data(tmp_path / "rev.jsonl", n=10)
    encoder = _base(tmp_path / "enc", family="encoder")
    with pytest.raises(ValueError, match="is a encoder model; `llmcycle finetune` fine-tunes decoder"):
        _finetune("--run", tmp_path / "o1", "--init-from", encoder, "--data", data, "--max-steps", 1)
    with pytest.raises(ValueError, match=r"--lora-targets \['q_proj'\] match no Linear layer.*qkv_proj"):
        _finetune("--run", tmp_path / "o2", "--init-from", base_run, "--data", data, "--max-steps", 1,
                  "--lora-targets", "q_proj", "o_proj")
    plain = _base(tmp_path / "plain")  # no chat template
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) + "\n")
    with pytest.raises(ValueError, match=r"chat\.jsonl:1: chat examples need a chat template"):
        _finetune("--run", tmp_path / "o3", "--init-from", plain, "--data", chat, "--max-steps", 1)
    for o in ("o1", "o2", "o3"):
        assert not (tmp_path / o).exists()
    shutil.rmtree(encoder)
