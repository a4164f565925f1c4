"""llmcycle runs behind the evaluation's adapter interface (see `interface.py`).

`DecoderAdapter` (decoder runs: generation and continuation log-likelihood, optionally through the
run's chat template), `Seq2SeqAdapter` (encoder-decoder runs: generation, and the log-likelihood of
the target given the input), `EncoderAdapter` (masked-LM runs: the continuation's tokens are masked
and scored through the mask, all at once; no generation). `llmcycle_adapter` picks one by family.

Batching: log-likelihood rows are right-padded (a causal model's real tokens never see later
padding) and scored by `scoring.py`; generation rows are left-padded with a padding mask and
per-row positions (`generate_ids`). Encoder-decoder targets are the continuation without its
leading whitespace, encoded on their own.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmcycle import rundir
from llmcycle.data.objectives import TokenRoles
from llmcycle.evaluation.interface import Adapter, cut_completion, stop_hit
from llmcycle.evaluation.scoring import causal_loglikelihood, score_spans, split_continuation
from llmcycle.inference.batching import pad_rows, right_pad
from llmcycle.inference.chat import chat_encoder, prompt_style
from llmcycle.inference.decoding import seeded_generator
from llmcycle.inference.generate import generate_ids
from llmcycle.inference.seq2seq import generate_seq2seq_ids

EMPTY = "empty continuation: a choice's answer text encodes to no tokens"


def _run_settings(run: Path, tok) -> tuple[bool, set[int]]:
    """(add bos?, stop ids) from an imported run's prompt files (tokenizer_config / generation_config)."""
    files = rundir.read_prompt_files(run)
    add_bos = tok.bos_id is not None and (files.add_bos_token if files.add_bos_token is not None else True)
    stop = {tok.eos_id} if tok.eos_id is not None else set()
    return add_bos, stop | set(files.eos_token_ids)


class _LLMCycle(Adapter):
    def __init__(self, model, tok, run: Path | None = None, name: str = "") -> None:
        self.model, self.tok, self.name = model.eval(), tok, name
        self.device = next(model.parameters()).device
        self.max_seq_len = model.cfg.max_seq_len
        self.add_bos, self.stop_ids = (tok.bos_id is not None, {tok.eos_id} - {None}) if run is None \
            else _run_settings(run, tok)
        self.pad_id = tok.pad_id if tok.pad_id is not None else 0

    def describe(self) -> str:
        return f"llmcycle {self.model.cfg.family} {self.name}".strip()

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special=True)

    def _stopper(self, rows: int, stop: list[str]):
        """on_step callback: True once every row has produced a stop id or a stop string."""
        history: list[list[int]] = [[] for _ in range(rows)]
        done = [False] * rows

        def on_step(nxt: torch.Tensor) -> bool:
            for r, t in enumerate(nxt.tolist()):
                if done[r]:
                    continue
                history[r].append(t)
                if t in self.stop_ids or (stop and stop_hit(self._decode(history[r]), stop)):
                    done[r] = True
            return all(done)

        return on_step

    def _answers(self, new: list[list[int]], stop: list[str]) -> list[str]:
        return [cut_completion(ids, self._decode, self.stop_ids, stop)[0] for ids in new]


class DecoderAdapter(_LLMCycle):
    kind = "decoder"
    chat = None  # prompt -> ids of one user turn in the run's chat template (see `use_chat`)
    compile = False  # decode through the compiled fixed-shape step (`generate --compile`)

    def use_chat(self, run: Path, system: str | None = None) -> None:
        """Send every prompt as one user turn through the run's chat template; answers (and label
        words) are the assistant's reply, without leading whitespace."""
        style = prompt_style(Path(run), self.tok)
        if not style.template:
            raise ValueError(f"{run} has no chat template ({rundir.CHAT_TEMPLATE}): evaluate it without --chat")
        self.chat = chat_encoder(self.tok, style, system)
        self.name += " (chat)"

    def encode(self, text: str) -> list[int]:
        return self.chat(text) if self.chat else self.tok.encode(text, bos=self.add_bos)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def generate(self, prompts, max_new_tokens, sampling, stop, seed=None):
        room = self.prompt_budget(max_new_tokens)
        rows = [self.encode(p)[-room:] for p in prompts]
        new = generate_ids(self.model, rows, max_new_tokens, sampling, seeded_generator(self.model, seed), None,
                           self.pad_id, on_step=self._stopper(len(rows), stop), compile=self.compile)
        return self._answers(new, stop)

    def _forward(self, idx, real):
        return self.model(idx)[0]  # right padding: causal rows never see it

    def loglikelihood(self, pairs):
        if self.chat:  # the continuation opens the assistant's reply
            rows = [(self.encode(c), self.tok.encode(x.lstrip())) for c, x in pairs]
        else:
            rows = [split_continuation(self.encode(c), self.encode(c + x), lambda x=x: self.tok.encode(x))
                    for c, x in pairs]
        if any(not cont for _, cont in rows):
            raise ValueError(EMPTY)
        return causal_loglikelihood(self._forward, rows, self.max_seq_len, self.pad_id, self.model.cfg.vocab_size,
                                    self.device)


class Seq2SeqAdapter(_LLMCycle):
    kind = "seq2seq"

    def count_tokens(self, text: str) -> int:
        return len(self.tok.encode(text))

    def prompt_budget(self, max_new_tokens: int) -> int | None:
        return self.max_seq_len  # the input has the encoder's whole context; the decoder has its own

    def _inputs(self, texts: list[str]) -> list[list[int]]:
        rows = [self.tok.encode(t)[-self.max_seq_len:] for t in texts]
        if any(not r for r in rows):
            raise ValueError("an empty input: seq2seq models need text to read")
        return rows

    def generate(self, prompts, max_new_tokens, sampling, stop, seed=None):
        start = TokenRoles.from_tokenizer(self.tok).decoder_start_id
        new = generate_seq2seq_ids(self.model, self._inputs(prompts), max_new_tokens, sampling,
                                   seeded_generator(self.model, seed), start, self.tok.eos_id, self.pad_id,
                                   on_step=self._stopper(len(prompts), stop))
        return self._answers(new, stop)

    def loglikelihood(self, pairs):
        start = TokenRoles.from_tokenizer(self.tok).decoder_start_id
        srcs = self._inputs([c for c, _ in pairs])
        tgts = [self.tok.encode(x.lstrip())[:self.max_seq_len] for _, x in pairs]
        if any(not t for t in tgts):
            raise ValueError(EMPTY)

        def forward(group: list[int]) -> torch.Tensor:
            src, src_pad = right_pad([srcs[i] for i in group], self.pad_id)
            dec, _ = pad_rows([[start] + tgts[i][:-1] for i in group], self.pad_id, left=False)  # teacher forcing
            return self.model(src.to(self.device), dec.to(self.device),
                              src_pad=None if src_pad is None else src_pad.to(self.device))[0]

        spans = [[(0, t)] for t in tgts]
        return [s[0] for s in score_spans(forward, [len(t) for t in tgts], self.model.cfg.vocab_size, spans)]


class EncoderAdapter(_LLMCycle):
    """Masked LM: the continuation's tokens become mask tokens after the context and are scored
    through the mask, all at once (sum of log p(token_i at mask_i)); no generation."""

    kind = "encoder"
    can_generate = False

    def __init__(self, model, tok, run=None, name="") -> None:
        super().__init__(model, tok, run, name)
        if tok.mask_id is None:
            raise ValueError("this encoder run's tokenizer has no mask token, so it cannot score label words")

    def count_tokens(self, text: str) -> int:
        return len(self.tok.encode(text))

    def generate(self, prompts, max_new_tokens, sampling, stop, seed=None):
        raise ValueError("an encoder (masked LM) does not generate text: evaluate it on a choice task "
                         "(sst2, agnews), where label words are scored through the mask")

    def loglikelihood(self, pairs):
        rows = [split_continuation(self.tok.encode(c), self.tok.encode(c + x), lambda x=x: self.tok.encode(x))
                for c, x in pairs]
        seqs, spans = [], []
        for ctx, cont in rows:
            if len(cont) >= self.max_seq_len:
                raise ValueError(f"a continuation of {len(cont)} tokens does not fit the "
                                 f"{self.max_seq_len}-token context")
            ctx = ctx[-(self.max_seq_len - len(cont)):]
            seqs.append(ctx + [self.tok.mask_id] * len(cont))
            spans.append([(len(ctx), cont)])

        def forward(group: list[int]) -> torch.Tensor:
            idx, pad = right_pad([seqs[i] for i in group], self.pad_id)
            return self.model(idx.to(self.device), pad=None if pad is None else pad.to(self.device))[0]

        return [s[0] for s in score_spans(forward, [len(s) for s in seqs], self.model.cfg.vocab_size, spans)]


LLMCYCLE_ADAPTERS = {"decoder": DecoderAdapter, "seq2seq": Seq2SeqAdapter, "encoder": EncoderAdapter}


def llmcycle_adapter(model, tok, run: Path | None = None, name: str = "") -> Adapter:
    family = model.cfg.family
    if family not in LLMCYCLE_ADAPTERS:
        raise ValueError(f"no evaluation adapter for the {family!r} family")
    return LLMCYCLE_ADAPTERS[family](model, tok, run, name)
