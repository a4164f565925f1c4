"""Evaluation metrics against their references: ROUGE equals `rouge-score` itself, GSM8K final
numbers, distinct-n and accuracy on hand-computed cases."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from llmcycle.evaluation.metrics import (ROUGE_TYPES, accuracy, distinct_n, exact_match, final_number, rouge,
                                         sentences_per_line)

PAIRS = [
    ("The cat sat on the mat.", "A cat was sitting on the mat."),
    ("#Person1# and #Person2# talk about the meeting. They agree to meet at 5.",
     "#Person2# agrees to meet #Person1# at five. They discuss the plan."),
    ("running runners ran", "the runner runs"),  # stemming matters
    ("", "nothing predicted"),
]


@pytest.mark.parametrize("pred,ref", PAIRS)
def test_rouge_equals_rouge_score_reference(pred, ref):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    want = scorer.score(ref, pred)
    lsum = scorer.score(sentences_per_line(ref), sentences_per_line(pred))["rougeLsum"]
    got = rouge(pred, [ref])
    for k in ("rouge1", "rouge2", "rougeL"):
        assert got[k] == pytest.approx(100 * want[k].fmeasure, abs=1e-12)
    assert got["rougeLsum"] == pytest.approx(100 * lsum.fmeasure, abs=1e-12)


def test_rouge_known_values_and_multi_reference():
    assert rouge("the cat sat", ["the cat sat"]) == {k: 100.0 for k in ROUGE_TYPES}
    # unigram P = 1/2, R = 1/4 -> F = 1/3
    assert rouge("the dog", ["the cat sat down"])["rouge1"] == pytest.approx(100 / 3)
    refs = ["the cat sat", "a dog ran away"]
    one, two = rouge("the cat ran", refs[:1]), rouge("the cat ran", refs[1:])
    both_max, both_mean = rouge("the cat ran", refs, "max"), rouge("the cat ran", refs, "mean")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    multi = scorer.score_multi(refs, "the cat ran")  # rouge-score's own multi-reference = max
    for k in ("rouge1", "rouge2", "rougeL"):
        assert both_max[k] == pytest.approx(max(one[k], two[k])) == pytest.approx(100 * multi[k].fmeasure)
        assert both_mean[k] == pytest.approx((one[k] + two[k]) / 2)
    assert sentences_per_line("One. Two!  Three? four") == "One.\nTwo!\nThree?\nfour"
    with pytest.raises(ValueError, match="at least one reference"):
        rouge("x", [])


def test_gsm8k_final_number():
    ref = "She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"
    assert final_number(ref) == "18"
    assert exact_match("so the answer is 18.", ref)
    assert exact_match("... #### 18.00", ref)
    assert exact_match("#### $18", ref)
    assert not exact_match("I think 17", ref)
    assert not exact_match("no number here", ref)
    assert final_number("#### 1,000") == "1000" == final_number("it costs $1,000.")
    assert final_number("#### -3.50") == "-3.5"
    assert final_number("first 12 then 7 #### 12 and later 9") == "12"  # first number after the last ####
    with pytest.raises(ValueError, match="no number"):
        exact_match("5", "none")


def test_distinct_n_and_accuracy():
    texts = ["a b a b", "a b c"]
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)  # {a, b, c} over 7 tokens
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)  # {ab, ba, bc} over 5 bigrams
    assert distinct_n(["A a"], 1) == 0.5  # lower-cased
    assert distinct_n(["x"], 2) == 0.0
    assert accuracy([True, False, True, True]) == 75.0
    with pytest.raises(ValueError):
        accuracy([])
