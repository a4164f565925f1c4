"""The planner's LoRA memory: adapter parameters equal what peft injects into llmcycle's models, and
`llmcycle plan --lora-rank` reports LoRA next to full fine-tuning."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from llmcycle.finetune.lora import LoraSpec, add_lora, count_params
from llmcycle.models import build_model
from llmcycle.plan import memory
from llmcycle.plan.shape import from_config


@pytest.mark.parametrize("kw, rank, targets", [
    ({}, 8, memory.LORA_TARGETS),
    ({"n_head": 4, "n_kv_head": 2, "mlp": "gelu"}, 4, ("qkv_proj", "down_proj")),
    ({"d_model": 48, "n_head": 6, "d_ff": 100}, 16, ("o_proj", "up_proj")),
])
def test_lora_params_equal_the_injected_adapters(kw, rank, targets):
    cfg = tiny_model(**kw)
    with torch.device("meta"):
        model = add_lora(build_model(cfg), LoraSpec(rank=rank, targets=list(targets)))
    assert memory.lora_params(from_config(cfg), rank, targets) == count_params(model)[0]


def test_lora_memory_is_the_frozen_base_plus_small_adapters():
    cfg = tiny_model(d_model=256, n_layer=4, vocab_size=4096, max_seq_len=512)
    sh = from_config(cfg)
    n = sum(p.numel() for p in build_model(cfg).parameters())
    full = memory.training_memory(n, sh, dtype="bf16", strategy="ddp", batch=4, seq=256)
    lora = memory.lora_training_memory(n, sh, 8, dtype="bf16", batch=4, seq=256)
    assert lora["weights"] == full["weights"]  # the base at its precision, no master copy
    assert lora["adapters"] == 16 * memory.lora_params(sh, 8)  # fp32 weight + grad + two AdamW moments
    assert full["activations"] < lora["activations"] < 1.05 * full["activations"]
    assert lora["total"] < 0.6 * full["total"]
    with pytest.raises(ValueError, match="not Linear layers the planner knows"):
        memory.lora_params(sh, 8, ("attn",))


def test_plan_cli_reports_lora_next_to_full(capsys):
    from llmcycle.cli import main

    assert main(["plan", "--layers", "4", "--d-model", "256", "--heads", "4", "--vocab", "4096", "--context", "512",
                 "--mlp", "swiglu", "--lora-rank", "8", "--gpus", "1"]) == 0
    out = capsys.readouterr().out
    assert "Fine-tuning on one" in out and "lora_r8" in out and "full" in out
