#!/bin/sh
# The scaling-law lab's own result (docs/scale.md): an IsoFLOP sweep on the default corpus (Python
# stdlib source, byte tokenizer), then both fits. On a shared 2-core machine each budget ran as its
# own process (disjoint points), niced, one torch thread; the sweep is resumable, so rerunning any
# line continues where it stopped. Budgets and sizes: docs/scale.md.
set -e
OUT=${OUT:-runs/scale-lab}
for C in 3.5e11 5e11 1e12 2e12 4e12; do
  nice -n 10 llmcycle scale sweep --out "$OUT" --tokenizer byte --budgets $C --sizes 5 --width 32 --threads 1 --quiet --resume
done
llmcycle scale fit "$OUT" --complete-budgets-only --out docs/scale
llmcycle scale fit "$OUT" --complete-budgets-only --params non-embedding --out "$OUT/fit-non-embedding"
