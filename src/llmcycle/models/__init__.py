"""Model families built from one layer library (`layers.py`); `build_model` picks by `cfg.family`."""

from __future__ import annotations

import torch.nn as nn

from llmcycle.config import ModelConfig


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build (and initialise) the model for `cfg.family`. Wrap in `torch.device("meta")` to count without memory."""
    if cfg.family == "decoder":
        from llmcycle.models.decoder import DecoderLM

        return DecoderLM(cfg)
    if cfg.family == "encoder":
        from llmcycle.models.encoder import EncoderLM

        return EncoderLM(cfg)
    if cfg.family == "seq2seq":
        from llmcycle.models.encoder_decoder import EncoderDecoderLM

        return EncoderDecoderLM(cfg)
    raise ValueError(f"family {cfg.family!r} is not implemented; available: 'decoder', 'encoder', 'seq2seq'")
