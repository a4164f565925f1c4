"""Task metrics: ROUGE (through `rouge-score`), accuracy, GSM8K final-number exact match, distinct-n.

ROUGE: `rouge_score.rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"],
use_stemmer=True)`, F-measure, reported x100. rougeLsum treats newlines as sentence breaks, so
for it (only) both texts get one sentence per line (split after . ! ? followed by a space), as the
Hugging Face summarization recipes do with nltk. With several references (DialogSum test has 3),
an example scores the max over references per ROUGE type (`score_multi`, the convention of
multi-reference summarization benchmarks) or, if the task asks, the mean.

GSM8K: the final number of a text is the first number after its last `####`, or else its last
number; numbers compare after dropping `,`, `$` and trailing zeros (`1,000.00` == `1000`).

distinct-n (Li et al. 2016): distinct n-grams / all n-grams over a set of outputs (lower-cased
whitespace tokens): how varied the completions are; 1.0 = no n-gram repeats.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SENT_END = re.compile(r"(?<=[.!?])\s+")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


@lru_cache(maxsize=1)
def _scorer():
    try:
        from rouge_score import rouge_scorer  # optional dependency (the `eval` extra)
    except ImportError:
        raise ValueError("ROUGE needs the `rouge-score` package: pip install 'llmcycle[eval]'") from None
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def sentences_per_line(text: str) -> str:
    """One sentence per line (what rougeLsum reads as sentence boundaries)."""
    return "\n".join(s for s in _SENT_END.split(text.strip()) if s)


def rouge(prediction: str, references: list[str], reduce: str = "max") -> dict[str, float]:
    """ROUGE-1/2/L/Lsum F-measure x100 of one prediction against one or more references."""
    if not references:
        raise ValueError("ROUGE needs at least one reference")
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    scorer = _scorer()
    per_ref = []
    for ref in references:
        s = scorer.score(ref, prediction)
        s["rougeLsum"] = scorer.score(sentences_per_line(ref), sentences_per_line(prediction))["rougeLsum"]
        per_ref.append({k: s[k].fmeasure for k in ROUGE_TYPES})
    pick = max if reduce == "max" else (lambda xs: sum(xs) / len(xs))
    return {k: 100.0 * pick([r[k] for r in per_ref]) for k in ROUGE_TYPES}


def accuracy(correct: list[bool]) -> float:
    if not correct:
        raise ValueError("accuracy of no examples")
    return 100.0 * sum(map(bool, correct)) / len(correct)


def _canonical(number: str) -> str | None:
    s = number.replace(",", "").replace("$", "").rstrip(".")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    d = d.normalize()
    return format(d.quantize(Decimal(1)) if d == d.to_integral() else d, "f")


def final_number(text: str) -> str | None:
    """The canonical final number of an answer: after the last '####' if any, else the last number."""
    if "####" in text:
        found = _NUMBER.findall(text.rsplit("####", 1)[1])
        if found:
            return _canonical(found[0])
    found = _NUMBER.findall(text)
    return _canonical(found[-1]) if found else None


def exact_match(prediction: str, reference: str) -> bool:
    """GSM8K: the final numbers of prediction and reference are equal (False if the prediction has none)."""
    want = final_number(reference)
    if want is None:
        raise ValueError(f"the reference has no number to match: {reference[-80:]!r}")
    return final_number(prediction) == want


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams of `texts` (0.0 when there are no n-grams)."""
    grams = []
    for t in texts:
        toks = t.lower().split()
        grams += [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
