"""What the three families change in a run's report, in words and samples.

    decoder   causal LM: prompts completed (lifecycle.sample_table)
    encoder   masked LM: fill-mask predictions for code with <mask> (top-5 with probabilities)
    seq2seq   span corruption: spans marked <mask> filled by the encoder-decoder, per sampling setting

Also the objective line, the evaluation line (bits per byte belong to the causal objective only),
the encoder/decoder parameter split and the sentence comparing compute per token across families.
"""

from __future__ import annotations

from llmcycle.config import RunConfig
from llmcycle.data.objectives import option, raw_length_for, seq2seq_lengths
from llmcycle.inference.fill_mask import fill_mask, filled_text
from llmcycle.inference.generate import GenerationConfig
from llmcycle.inference.sampling import SamplingConfig
from llmcycle.models.accounting import stack_params

MASKED_PROMPTS = [
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) <mask> fibonacci(n - 2)\n",
    "import os\n\nfor name in os.listdir(path):\n    print(name<mask>\n",
    "class Stack:\n    def __init__(self):\n        self.items = <mask>]\n\n    def push(self, item):\n        self.<mask>.append(item)\n",
]
INFILL_PROMPTS = [
    "def fibonacci(n):\n    if n < 2:\n        return <mask>\n    return fibonacci(n - 1) + fibonacci(<mask>)\n",
    "import os\n\n\ndef list_python_files(root):\n    for name in os.<mask>(root):\n        if name.endswith(<mask>):\n            yield name\n",
    "class Stack:\n    def __init__(self):\n        self.items = <mask>\n\n    def push(self, item):\n        self.<mask>.append(item)\n",
]
SAMPLE_INTRO = {
    "decoder": "Each prompt completed under each setting (seed 0). The prompt is shown before the completion.",
    "encoder": "Each `<mask>` filled by the encoder: its five most likely tokens with their probabilities, "
               "then the text with the most likely token in every mask.",
    "seq2seq": "Each `<mask>` marks a span for the encoder-decoder to write (it becomes a sentinel, as in training); "
               "the spans it wrote are shown [[in double brackets]] inside the input, under each setting (seed 0).",
}


def layers_text(m) -> str:
    return f"{m.n_layer} encoder + {m.dec_layers} decoder layers" if m.family == "seq2seq" else f"{m.n_layer} layers"


def objective_line(cfg: RunConfig) -> str:
    m, n = cfg.model, cfg.train.seq_len
    if m.family == "encoder":
        p, mask, rnd = (option(m, k) for k in ("mlm_probability", "mlm_mask_fraction", "mlm_random_fraction"))
        return (f"- objective: masked LM (BERT): {p:.0%} of tokens chosen; of those {mask:.0%} shown as the mask token, "
                f"{rnd:.0%} as a random token, {1 - mask - rnd:.0%} unchanged; loss on the chosen tokens only")
    if m.family == "seq2seq":
        d, mean = option(m, "noise_density"), option(m, "mean_span_length")
        S, T = seq2seq_lengths(m, n)
        return (f"- objective: span corruption (T5): {d:.0%} of each {raw_length_for(n, d, mean)}-token window in spans of "
                f"mean length {mean:g}, each replaced by a sentinel: {S}-token inputs, {T}-token targets, no padding")
    return "- objective: causal LM: predict every next token"


def evaluation_line(family: str, val: dict) -> str:
    if family == "decoder":
        return f"- validation loss {val['val_loss']:.4f} nats/token, {val['val_bpb']:.4f} bits per byte"
    what = {"encoder": "per chosen (masked) token", "seq2seq": "per target token (teacher-forced)"}[family]
    return (f"- validation loss {val['val_loss']:.4f} nats {what}; bits per byte: not given, as they measure the "
            "causal objective, where every token is predicted, and are not comparable here")


def stack_line(model) -> str | None:
    s = stack_params(model)
    if not (s["encoder"] and s["decoder"]):
        return None
    return (f"- stacks: encoder {s['encoder']:,}, decoder {s['decoder']:,} (of which cross-attention "
            f"{s['cross_attention']:,}), shared embedding and head {s['shared']:,} parameters")


def compute_comparison(cfg: RunConfig) -> str:
    """One sentence comparing training FLOPs per token of the three families at this width and depth."""
    from llmcycle.models.accounting import family_costs

    m, n = cfg.model, cfg.train.seq_len
    costs = family_costs(m, n)
    dec, enc, s2s = (costs[f]["flops_per_token"] for f in ("decoder", "encoder", "seq2seq"))
    ratio = costs[m.family]["flops_per_token"] / dec
    S, T = seq2seq_lengths(m if m.family == "seq2seq" else None, n)
    return (f"- compute per training token across the families at this width and depth ({n}-token sequences): "
            f"decoder {dec:,} FLOPs, encoder {enc:,} (the same matmuls: dropping the causal mask changes what "
            f"attention sees, not its counted cost), encoder-decoder {s2s:,} ({s2s / dec:.2f}x: a second stack with "
            f"cross-attention, {costs['seq2seq']['params'] / costs['decoder']['params']:.2f}x the parameters, whose "
            f"decoder runs on only the {T}-token target of each {S}-token input); this {m.family} costs {ratio:.2f}x "
            "the decoder per token")


def fill_mask_rows(model, tok, prompts: list[str] = MASKED_PROMPTS, top_k: int = 5) -> list[dict]:
    rows = []
    for text in prompts:
        preds = fill_mask(model, tok, text, top_k)
        notes = [f"# <mask> {p.index + 1}: " + ", ".join(f"{t!r} {pr:.0%}" for t, pr in p.candidates) for p in preds]
        shown = text + "\n" + "\n".join(notes) + "\n# most likely:\n" + filled_text(text, preds)
        rows.append({"setting": f"fill-mask, top {top_k}", "prompt": text, "completion": filled_text(text, preds),
                     "finish": f"{len(preds)} mask{'s' * (len(preds) > 1)}", "shown": shown})
    return rows


def infill_rows(model, tok, settings: list[SamplingConfig], prompts: list[str] = INFILL_PROMPTS,
                max_new_tokens: int = 40, seed: int = 0) -> list[dict]:
    from llmcycle.inference.seq2seq import generate_seq2seq, infill

    rows = []
    for s in settings:
        gen = GenerationConfig(max_new_tokens=max_new_tokens, sampling=s, seed=seed, truncate="left")
        for c in generate_seq2seq(model, tok, prompts, gen):
            shown = infill(tok, c.prompt, c.tokens) + f"\n# decoder output: {c.text!r}"
            rows.append({"setting": s.describe(), "prompt": c.prompt, "completion": c.text, "finish": c.finish_reason,
                         "shown": shown})
    return rows
