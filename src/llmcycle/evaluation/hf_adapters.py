"""Hugging Face models behind the evaluation's adapter interface (see `interface.py`):
`HFCausalAdapter` (`AutoModelForCausalLM`) and `HFSeq2SeqAdapter` (`AutoModelForSeq2SeqLM`), from a
local folder or a hub name when online; `hf_adapter` loads one. transformers is imported lazily.
"""

from __future__ import annotations

import torch

from llmcycle.evaluation.interface import Adapter, cut_completion, stop_hit
from llmcycle.evaluation.scoring import causal_loglikelihood, score_spans, split_continuation
from llmcycle.inference.batching import pad_rows
from llmcycle.inference.config import SamplingConfig

EMPTY = "empty continuation: a choice's answer text encodes to no tokens"


def _hf_sampling_config(model, tok, max_new_tokens: int, sampling: SamplingConfig):
    """A complete transformers GenerationConfig (the model's own defaults, e.g. top_k=50, never leak in)."""
    from transformers import GenerationConfig  # optional heavy dependency: only when an HF model is evaluated

    base = model.generation_config
    kw = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=base.eos_token_id,
              bos_token_id=base.bos_token_id, decoder_start_token_id=base.decoder_start_token_id)
    if sampling.temperature == 0:
        kw.update(do_sample=False, num_beams=1)
    else:
        kw.update(do_sample=True, temperature=sampling.temperature, top_k=sampling.top_k or 0,
                  top_p=sampling.top_p if sampling.top_p is not None else 1.0)
    return GenerationConfig(**kw)


def _stop_criteria(tok, start: int, stop: list[str]):
    """transformers stopping criteria: a row ends once its new text holds a stop string (`stop_hit`)."""
    from transformers import StoppingCriteria, StoppingCriteriaList  # optional heavy dependency, as above

    class StopStrings(StoppingCriteria):
        """Per row: True once the new text contains a stop string."""

        def __call__(self, input_ids, scores, **kwargs):
            texts = tok.batch_decode(input_ids[:, start:], skip_special_tokens=True)
            return torch.tensor([stop_hit(t, stop) for t in texts], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopStrings()]) if stop else None


class _HF(Adapter):
    def __init__(self, model, tok, name: str) -> None:
        self.model, self.tok, self.name = model.eval(), tok, name
        self.device = next(model.parameters()).device
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
        cfg = model.config
        limits = [getattr(cfg, k, None) for k in ("max_position_embeddings", "n_positions")]
        limits = [n for n in limits if isinstance(n, int) and n > 0]
        if isinstance(tok.model_max_length, int) and tok.model_max_length < 1_000_000:
            limits.append(tok.model_max_length)
        self.max_seq_len = min(limits) if limits else None
        self.stop_ids = {i for i in _as_list(model.generation_config.eos_token_id) if i is not None} | \
            ({tok.eos_token_id} if tok.eos_token_id is not None else set())

    def describe(self) -> str:
        return f"hf {self.kind} {self.name}"

    def encode(self, text: str, special: bool = True) -> list[int]:
        return self.tok(text, add_special_tokens=special)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def _generate(self, rows: list[list[int]], max_new_tokens, sampling, stop, seed, strip: int):
        ids, real = pad_rows(rows, self.tok.pad_token_id, left=True)
        mask = real.long()  # attention_mask: 1 at real tokens
        gen = _hf_sampling_config(self.model, self.tok, max_new_tokens, sampling)
        start = ids.shape[1] if strip < 0 else strip
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      generation_config=gen, stopping_criteria=_stop_criteria(self.tok, start, stop))
        return [cut_completion(row[start:].tolist(), self._decode, self.stop_ids, stop)[0] for row in out]


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


class HFCausalAdapter(_HF):
    kind = "causal"
    chat_system: str | None = None
    chat = False

    def use_chat(self, system: str | None = None) -> None:
        """Every prompt becomes one user turn of the tokenizer's chat template (see DecoderAdapter)."""
        if not getattr(self.tok, "chat_template", None):
            raise ValueError(f"{self.name} has no chat template: evaluate it without --chat")
        self.chat, self.chat_system = True, system
        self.name += " (chat)"

    def encode(self, text: str, special: bool = True) -> list[int]:
        if not (self.chat and special):
            return super().encode(text, special)
        messages = ([{"role": "system", "content": self.chat_system}] if self.chat_system else []) + \
            [{"role": "user", "content": text}]
        rendered = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tok(rendered, add_special_tokens=False)["input_ids"]

    def generate(self, prompts, max_new_tokens, sampling, stop, seed=None):
        room = self.prompt_budget(max_new_tokens)
        rows = [self.encode(p)[-room:] if room else self.encode(p) for p in prompts]
        return self._generate(rows, max_new_tokens, sampling, stop, seed, strip=-1)

    def _forward(self, idx, real):
        return self.model(input_ids=idx, attention_mask=real.long()).logits

    def loglikelihood(self, pairs):
        if self.chat:
            rows = [(self.encode(c), self.encode(x.lstrip(), False)) for c, x in pairs]
        else:
            rows = [split_continuation(self.encode(c), self.encode(c + x), lambda x=x: self.encode(x, False))
                    for c, x in pairs]
        if any(not cont for _, cont in rows):
            raise ValueError(EMPTY)
        return causal_loglikelihood(self._forward, rows, self.max_seq_len, self.tok.pad_token_id,
                                    self.model.config.vocab_size, self.device)


class HFSeq2SeqAdapter(_HF):
    kind = "seq2seq"

    def prompt_budget(self, max_new_tokens: int) -> int | None:
        return self.max_seq_len

    def _inputs(self, texts):
        return [self.encode(t)[-self.max_seq_len:] if self.max_seq_len else self.encode(t) for t in texts]

    def generate(self, prompts, max_new_tokens, sampling, stop, seed=None):
        # the decoder's output starts with decoder_start_token_id: skip it
        return self._generate(self._inputs(prompts), max_new_tokens, sampling, stop, seed, strip=1)

    def loglikelihood(self, pairs):
        srcs = self._inputs([c for c, _ in pairs])
        tgts = [self.encode(x.lstrip(), False) for _, x in pairs]
        if any(not t for t in tgts):
            raise ValueError(EMPTY)

        def forward(group: list[int]) -> torch.Tensor:
            ids, real = pad_rows([srcs[i] for i in group], self.tok.pad_token_id, left=False)
            labels, _ = pad_rows([tgts[i] for i in group], -100, left=False)  # the model shifts them right itself
            return self.model(input_ids=ids.to(self.device), attention_mask=real.long().to(self.device),
                              labels=labels.to(self.device)).logits

        spans = [[(0, t)] for t in tgts]
        return [s[0] for s in score_spans(forward, [len(t) for t in tgts], self.model.config.vocab_size, spans)]


def hf_adapter(path_or_name: str, device: str = "cpu", dtype: str = "float32") -> Adapter:
    """A Hugging Face model from a local folder (or a hub name, when online)."""
    try:  # optional heavy dependency: imported only when an HF model is evaluated
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    except ImportError:
        raise ValueError("--hf needs the `transformers` package: pip install 'llmcycle[hf]'") from None
    try:
        cfg = AutoConfig.from_pretrained(path_or_name)
        tok = AutoTokenizer.from_pretrained(path_or_name)
        auto = AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else AutoModelForCausalLM
        model = auto.from_pretrained(path_or_name, dtype=getattr(torch, dtype)).to(device)
    except (OSError, ValueError) as e:
        raise ValueError(f"could not load the Hugging Face model {path_or_name!r} (a local folder, or a hub "
                         f"name when online): {e}") from None
    cls = HFSeq2SeqAdapter if cfg.is_encoder_decoder else HFCausalAdapter
    return cls(model, tok, str(path_or_name))


