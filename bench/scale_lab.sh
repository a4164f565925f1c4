#!/bin/sh
# The scaling-law lab's own result (docs/scale.md): an IsoFLOP sweep on the default corpus (Python
# stdlib source, byte tokenizer), then both fits. On the shared 2-core machine each budget ran as its
# own invocation into the same directory, niced, one torch thread (two or three at a time, on
# disjoint points); the sweep is resumable, so rerunning any line continues where it stopped.
# 8e12 was planned too and never run (for time); the fit leaves it out.
set -e
OUT=${OUT:-runs/scale-lab}
for C in 3.5e11 5e11 1e12 2e12 4e12; do
  nice -n 10 llmcycle scale sweep --out "$OUT" --tokenizer byte --budgets $C --sizes 5 --width 32 --threads 1 --quiet --resume
done
# 1e12 widened afterwards (its minimum sat at the edge): adds rungs 2 and 6 to the same budget
nice -n 10 llmcycle scale sweep --out "$OUT" --tokenizer byte --budgets 1e12 --sizes 5 --width 64 --threads 1 --quiet --resume
llmcycle scale fit "$OUT" --complete-budgets-only --out docs/scale
llmcycle scale fit "$OUT" --complete-budgets-only --params non-embedding --out "$OUT/fit-non-embedding"
