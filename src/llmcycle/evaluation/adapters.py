"""The adapter for what `llmcycle eval` scores: an llmcycle run directory (any family) or a Hugging
Face model. The interface is in `interface.py`; the implementations in `llmcycle_adapters.py`
(llmcycle decoder / seq2seq / encoder runs) and `hf_adapters.py` (`AutoModelForCausalLM` /
`AutoModelForSeq2SeqLM` from a local folder, or a hub name when online; transformers is imported
only when one is loaded). Continuation scoring is in `scoring.py`. Tests check batched results
against one-at-a-time ones.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmcycle import rundir
from llmcycle.evaluation.hf_adapters import hf_adapter
from llmcycle.evaluation.interface import Adapter
from llmcycle.evaluation.llmcycle_adapters import DecoderAdapter, llmcycle_adapter
from llmcycle.inference.weight_only import quantize_weights


def load_adapter(run: str | Path | None = None, hf: str | None = None, device: str = "cpu",
                 dtype: str = "float32", chat: bool = False, system: str | None = None,
                 quantize: str | None = None, compile: bool = False) -> Adapter:
    """The adapter for an llmcycle run directory (any family) or a Hugging Face model; `chat` sends
    prompts through the model's chat template (decoders / causal models with a template).
    quantize (int8 | int4 weight-only) and compile (the compiled decoding step) speed up llmcycle runs
    on a CPU, as in `llmcycle generate`."""
    if (run is None) == (hf is None):
        raise ValueError("evaluate either an llmcycle run (--run DIR) or a Hugging Face model (--hf PATH_OR_NAME)")
    if hf is not None and (quantize or compile):
        raise ValueError("--quantize and --compile apply to llmcycle runs (--run); load the HF model with --dtype")
    if hf is not None:
        adapter = hf_adapter(hf, device, dtype)
    else:
        run = Path(run)
        model, _ = rundir.load_model(run, device)
        model = model.to(getattr(torch, dtype))
        if quantize:
            quantize_weights(model, quantize)
        name = run.name + (f" {quantize}" if quantize else "")
        adapter = llmcycle_adapter(model, rundir.load_tokenizer(run), run, name)
        if compile:
            if not isinstance(adapter, DecoderAdapter):
                raise ValueError(f"--compile applies to decoder runs; this is a {adapter.describe()} model")
            adapter.compile = True
    if chat:
        if not hasattr(adapter, "use_chat"):
            raise ValueError(f"--chat applies to decoder (causal) models; this is a {adapter.describe()} model")
        adapter.use_chat(*([run] if hf is None else []), system)
    return adapter
