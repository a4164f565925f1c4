"""Shared fixtures: tiny configs, a tiny prepared run directory, and the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from llmcycle.config import DataConfig, ModelConfig, RunConfig, TrainConfig

SHARED = Path(os.environ.get("LLMCYCLE_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"

# Tiny test models gain nothing from intra-op threads, and on a busy 2-core machine the OpenMP
# spin-waits of a second thread make them many times slower.
torch.set_num_threads(1)


def saved_activation_bytes(model: torch.nn.Module, idx: torch.Tensor) -> int:
    """Bytes autograd saves for backward in one training forward of `model` on idx (B, T): each
    saved storage counted once, the model's own parameters and buffers excluded."""
    own = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in own:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(idx, torch.roll(idx, -1, 1))
    return sum(seen.values())


def tiny_model(**kw) -> ModelConfig:
    base = dict(vocab_size=300, n_layer=2, d_model=32, n_head=4, max_seq_len=64)
    return ModelConfig(**{**base, **kw})


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def prepared_run(tmp_path_factory) -> Path:
    """A run directory with ~300 KB of the default corpus prepared with the byte tokenizer."""
    from llmcycle.data.prepare import prepare
    from llmcycle.rundir import config_path, data_dir

    run = tmp_path_factory.mktemp("run")
    data = DataConfig(tokenizer="byte", max_bytes=300_000)
    meta = prepare(data, data_dir(run), progress=False)
    cfg = RunConfig(model=tiny_model(vocab_size=meta["vocab_size"]), data=data,
                    train=TrainConfig(seq_len=32, batch_size=8, max_steps=10, eval_every=5, eval_batches=2,
                                      ckpt_every=5, warmup_steps=2, lr=3e-3))
    cfg.save(config_path(run))
    return run
