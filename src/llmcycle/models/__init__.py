"""Model families built from one layer library (`layers.py`); `build_model` picks by `cfg.family`."""

from __future__ import annotations

import torch.nn as nn

from llmcycle.config import ModelConfig
from llmcycle.models.decoder import DecoderLM
from llmcycle.models.encoder import EncoderLM
from llmcycle.models.encoder_decoder import EncoderDecoderLM


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build (and initialise) the model for `cfg.family`. Wrap in `torch.device("meta")` to count without memory."""
    if cfg.family == "decoder":
        return DecoderLM(cfg)
    if cfg.family == "encoder":
        return EncoderLM(cfg)
    if cfg.family == "seq2seq":
        return EncoderDecoderLM(cfg)
    raise ValueError(f"family {cfg.family!r} is not implemented; available: 'decoder', 'encoder', 'seq2seq'")
