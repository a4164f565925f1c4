"""LoRA through Hugging Face `peft`: adapters injected into a DecoderLM's Linear layers by name,
saved alone, and merged back into plain base weights.

    y = W x + (alpha / r) * B A x        A: (r, in) random, B: (out, r) zeros -> step 0 = the base model

`peft.inject_adapter_in_model` replaces each targeted `nn.Linear` (matched by the last part of its
module name: qkv_proj, o_proj, up_proj, down_proj, head) with a LoRA layer around it and freezes
everything else, so the model keeps its class and forward; only `lora_A`/`lora_B` train. `merge`
writes W + (alpha / r) B A into a fresh model of the base architecture, so generate, eval, export
and serve read a plain run directory with no adapter code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

TARGETS = ("qkv_proj", "o_proj", "up_proj", "down_proj")  # every Linear of every block (QLoRA's advice)
ADAPTER = "default"


@dataclass
class LoraSpec:
    rank: int = 8  # r: the adapters' inner dimension
    alpha: float = 16.0  # scale alpha / r on the adapters' output
    dropout: float = 0.05  # dropout on the adapters' input
    targets: list[str] = field(default_factory=lambda: list(TARGETS))  # Linear module names to adapt

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"--lora-rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"--lora-alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--lora-dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ValueError("--lora-targets needs at least one module name, e.g. qkv_proj o_proj")

    def to_dict(self) -> dict:
        return asdict(self)


def linear_names(model: nn.Module) -> list[str]:
    """The distinct last name parts of the model's Linear layers (what --lora-targets may name)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})


def _peft():
    try:
        import peft
    except ImportError:
        raise ValueError("LoRA needs the `peft` package: pip install 'llmcycle[hf]' (or pip install peft)") from None
    return peft


def add_lora(model: nn.Module, spec: LoraSpec) -> nn.Module:
    """Inject LoRA adapters in place; everything but the adapters is frozen. Returns the model."""
    have = linear_names(model)
    unknown = [t for t in spec.targets if t not in have]
    if unknown:
        raise ValueError(f"--lora-targets {unknown} match no Linear layer of this model; its Linear layers are "
                         f"named {', '.join(have)}")
    peft = _peft()
    config = peft.LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                             target_modules=list(spec.targets), bias="none")
    peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors alone, named as in the model (blocks.0.attn.qkv_proj.lora_A.default.weight)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if "lora_" in n}


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, tied tensors counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


@torch.no_grad()
def merged_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base architecture's state dict with every adapter folded in: W + (alpha / r) B A."""
    layers = lora_layers(model)
    out = {}
    for name, t in model.state_dict().items():
        if "lora_" in name:
            continue
        module, _, leaf = name.rpartition(".")
        if module.endswith(".base_layer") and module[: -len(".base_layer")] in layers:
            owner = module[: -len(".base_layer")]
            if leaf == "weight":
                t = t + layers[owner].get_delta_weight(ADAPTER).to(t.dtype)
            name = f"{owner}.{leaf}"
        out[name] = t.detach().clone()
    return out


def merge_into(base: nn.Module, adapted: nn.Module) -> nn.Module:
    """Load the merged weights of `adapted` into `base` (a fresh model of the same config)."""
    missing, unexpected = base.load_state_dict(merged_state(adapted), strict=False)
    tied = {n for n in missing if n == "head.weight" and getattr(base.cfg, "tie_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise ValueError(f"merged weights do not fit the base model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return base
