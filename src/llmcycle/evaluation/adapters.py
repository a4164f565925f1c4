"""Model adapters: one interface over every model the evaluation can score.

    count_tokens(text) -> int                  prompt length as the model will see it
    generate(prompts, max_new_tokens, sampling, stop, seed) -> completions (batched, left-padded)
    loglikelihood([(context, continuation)]) -> [(sum log p(continuation | context), n tokens, greedy?)]

Adapters: `DecoderAdapter` (llmcycle decoder runs: generation and continuation log-likelihood),
`Seq2SeqAdapter` (llmcycle encoder-decoder runs: generation, and the log-likelihood of the target
given the input), `EncoderAdapter` (llmcycle masked-LM runs: the continuation's tokens are
masked and scored through the mask, all at once; no generation), `HFCausalAdapter` and
`HFSeq2SeqAdapter` (in `hf_adapters.py`: Hugging Face `AutoModelForCausalLM` / `AutoModelForSeq2SeqLM` from a local
folder, or a hub name when online). `load_adapter(run=..., hf=...)` picks one.

Batching: log-likelihood rows are right-padded (a causal model's real tokens never see later
padding) and rows with identical inputs are computed once (label words of one token share the
context's forward pass); generation rows are left-padded with a padding mask and per-row
positions (llmcycle `generate_ids`) or an attention mask (Hugging Face `generate`). Tests check
both against one-at-a-time results.

Continuation tokens: a causal model scores `encode(context + continuation)` beyond the tokens of
`encode(context)` (joint tokenization, as lm-evaluation-harness does); when the two disagree at
the boundary, the continuation is encoded on its own and appended. Encoder-decoder targets are
the continuation without its leading whitespace, encoded on their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from llmcycle import rundir
from llmcycle.inference.sampling import SamplingConfig

LOGITS_BUDGET = 64 * 2**20  # float32 logits elements per log-likelihood forward (256 MB)


def split_continuation(ctx_ids: list[int], full_ids: list[int], cont_only: Callable[[], list[int]]):
    """(context ids, continuation ids) from a joint tokenization, falling back to separate encoding."""
    n = len(ctx_ids)
    if len(full_ids) > n and full_ids[:n] == ctx_ids:
        return ctx_ids, full_ids[n:]
    cont = cont_only()
    if not cont:
        raise ValueError("empty continuation: a choice's answer text encodes to no tokens")
    return ctx_ids, cont


def stop_hit(text: str, stop: list[str]) -> bool:
    """Whether a stop string occurs after the completion's leading whitespace (a model that starts
    its answer with a newline has not finished when the task stops at newlines)."""
    text = text.lstrip()
    return any(s and s in text for s in stop)


def cut_completion(ids: list[int], decode: Callable[[list[int]], str], stop_ids: set[int],
                   stop: list[str]) -> tuple[str, int]:
    """(text, new tokens kept): the ids up to the first stop id, decoded, leading whitespace
    removed, cut before the first stop string."""
    for i, t in enumerate(ids):
        if t in stop_ids:
            ids = ids[:i]
            break
    text = decode(ids).lstrip()
    hits = [text.find(s) for s in stop if s and s in text]
    return (text[:min(hits)] if hits else text), len(ids)


def _chunks_by_budget(lengths: list[int], vocab: int) -> list[list[int]]:
    """Row indices grouped so each group's padded logits stay under LOGITS_BUDGET elements."""
    groups, cur, cur_max = [], [], 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        m = max(cur_max, lengths[i])
        if cur and m * vocab * (len(cur) + 1) > LOGITS_BUDGET:
            groups.append(cur)
            cur, m = [], lengths[i]
        cur.append(i)
        cur_max = m
    if cur:
        groups.append(cur)
    return groups


def causal_loglikelihood(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         rows: list[tuple[list[int], list[int]]], context: int | None, pad_id: int,
                         vocab: int, device) -> list[tuple[float, int, bool]]:
    """Sum log p(cont | ctx) for (ctx_ids, cont_ids) rows with a causal model.
    forward(idx (B, T) right-padded, attn (B, T) bool True at real tokens) -> logits (B, T, V)."""
    inputs, conts = [], []
    for ctx, cont in rows:
        seq = ctx + cont
        if context is not None and len(seq) > context:
            if len(cont) >= context:
                raise ValueError(f"a continuation of {len(cont)} tokens does not fit the {context}-token context")
            seq = seq[-context:]  # keep the end: the continuation and the nearest context
        inputs.append(tuple(seq[:-1]))
        conts.append(cont)
    unique = list(dict.fromkeys(inputs))  # identical inputs are computed once
    where = {u: i for i, u in enumerate(unique)}
    logprobs: list[torch.Tensor | None] = [None] * len(unique)  # (T, V) log-softmax rows needed later
    need: dict[tuple, int] = {}  # input -> longest continuation scored on it
    for inp, cont in zip(inputs, conts):
        need[inp] = max(need.get(inp, 0), len(cont))
    for group in _chunks_by_budget([len(u) for u in unique], vocab):
        T = max(len(unique[i]) for i in group)
        idx = torch.full((len(group), T), pad_id, dtype=torch.long)
        attn = torch.zeros(len(group), T, dtype=torch.bool)
        for r, i in enumerate(group):
            idx[r, :len(unique[i])] = torch.tensor(unique[i])
            attn[r, :len(unique[i])] = True
        with torch.inference_mode():
            logits = forward(idx.to(device), attn.to(device))  # (B, T, V)
        for r, i in enumerate(group):
            L, k = len(unique[i]), need[unique[i]]
            logprobs[i] = logits[r, L - k:L].float().log_softmax(-1).cpu()  # (k, V): predicting the last k tokens
    out = []
    for inp, cont in zip(inputs, conts):
        lp = logprobs[where[inp]]
        lp = lp[lp.shape[0] - len(cont):]  # (len(cont), V): the positions predicting the continuation
        tgt = torch.tensor(cont)
        picked = lp.gather(1, tgt[:, None]).squeeze(1)
        out.append((float(picked.sum()), len(cont), bool((lp.argmax(-1) == tgt).all())))
    return out


def pad_rows(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ids (B, T) padded on the left (generation) or right (scoring), attention mask (B, T) long,
    1 at real tokens."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(T - len(r), T) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def _room(context: int | None, max_new_tokens: int) -> int | None:
    """Tokens a prompt may keep so that the answer fits (at least half the context stays for the prompt)."""
    if context is None:
        return None
    return max(context - max_new_tokens, context // 2)


class Adapter:
    """Interface; see the module docstring."""

    kind = "?"
    can_generate = True
    context: int | None = None  # tokens the model can attend to (None: no known limit)

    def describe(self) -> str:
        return self.kind

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    def prompt_budget(self, max_new_tokens: int) -> int | None:
        return _room(self.context, max_new_tokens)

    def generate(self, prompts: list[str], max_new_tokens: int, sampling: SamplingConfig, stop: list[str],
                 seed: int | None = None) -> list[str]:
        raise NotImplementedError

    def loglikelihood(self, pairs: list[tuple[str, str]]) -> list[tuple[float, int, bool]]:
        raise NotImplementedError


# ---------------------------------------------------------------- llmcycle models


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
        self.context = model.cfg.max_seq_len
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

    def _generator(self, seed: int | None):
        return None if seed is None else torch.Generator(device=self.device).manual_seed(seed)


class DecoderAdapter(_LLMCycle):
    kind = "decoder"
    chat = None  # prompt -> ids of one user turn in the run's chat template (see `use_chat`)
    compile = False  # decode through the compiled fixed-shape step (`generate --compile`)

    def use_chat(self, run: Path, system: str | None = None) -> None:
        """Send every prompt as one user turn through the run's chat template; answers (and label
        words) are the assistant's reply, without leading whitespace."""
        from llmcycle.inference.chat import chat_encoder, prompt_style

        style = prompt_style(Path(run), self.tok)
        if not style.template:
            raise ValueError(f"{run} has no chat template (chat_template.jinja): evaluate it without --chat")
        self.chat = chat_encoder(self.tok, style, system)
        self.name += " (chat)"

    def encode(self, text: str) -> list[int]:
        return self.chat(text) if self.chat else self.tok.encode(text, bos=self.add_bos)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def generate(self, prompts, max_new_tokens, sampling, stop, seed=None):
        from llmcycle.inference.generate import generate_ids

        room = self.prompt_budget(max_new_tokens)
        rows = [self.encode(p)[-room:] for p in prompts]
        new = generate_ids(self.model, rows, max_new_tokens, sampling, self._generator(seed), None, self.pad_id,
                           on_step=self._stopper(len(rows), stop), compile=self.compile)
        return [cut_completion(ids, self._decode, self.stop_ids, stop)[0] for ids in new]

    def _forward(self, idx, attn):
        return self.model(idx)[0]  # right padding: causal rows never see it

    def loglikelihood(self, pairs):
        if self.chat:  # the continuation opens the assistant's reply
            rows = [(self.encode(c), self.tok.encode(x.lstrip())) for c, x in pairs]
        else:
            rows = [split_continuation(self.encode(c), self.encode(c + x), lambda x=x: self.tok.encode(x))
                    for c, x in pairs]
        if any(not cont for _, cont in rows):
            raise ValueError("empty continuation: a choice's answer text encodes to no tokens")
        return causal_loglikelihood(self._forward, rows, self.context, self.pad_id, self.model.cfg.vocab_size,
                                    self.device)


class Seq2SeqAdapter(_LLMCycle):
    kind = "seq2seq"

    def count_tokens(self, text: str) -> int:
        return len(self.tok.encode(text))

    def prompt_budget(self, max_new_tokens: int) -> int | None:
        return self.context  # the input has the encoder's whole context; the decoder has its own

    def _inputs(self, texts: list[str]) -> list[list[int]]:
        rows = [self.tok.encode(t)[-self.context:] for t in texts]
        if any(not r for r in rows):
            raise ValueError("an empty input: seq2seq models need text to read")
        return rows

    def generate(self, prompts, max_new_tokens, sampling, stop, seed=None):
        from llmcycle.data.objectives import TokenRoles
        from llmcycle.inference.seq2seq import generate_seq2seq_ids

        start = TokenRoles.from_tokenizer(self.tok).decoder_start_id
        new = generate_seq2seq_ids(self.model, self._inputs(prompts), max_new_tokens, sampling, self._generator(seed),
                                   start, self.tok.eos_id, self.pad_id, on_step=self._stopper(len(prompts), stop))
        return [cut_completion(ids, self._decode, self.stop_ids, stop)[0] for ids in new]

    def loglikelihood(self, pairs):
        from llmcycle.data.objectives import TokenRoles

        start = TokenRoles.from_tokenizer(self.tok).decoder_start_id
        srcs = self._inputs([c for c, _ in pairs])
        tgts = [self.tok.encode(x.lstrip())[:self.context] for _, x in pairs]
        if any(not t for t in tgts):
            raise ValueError("empty continuation: a choice's answer text encodes to no tokens")
        out: list[tuple[float, int, bool] | None] = [None] * len(pairs)
        V = self.model.cfg.vocab_size
        for group in _chunks_by_budget([len(t) for t in tgts], V):
            S, T = max(len(srcs[i]) for i in group), max(len(tgts[i]) for i in group)
            src = torch.full((len(group), S), self.pad_id, dtype=torch.long)
            src_pad = torch.ones(len(group), S, dtype=torch.bool)
            dec = torch.full((len(group), T), self.pad_id, dtype=torch.long)
            for r, i in enumerate(group):
                src[r, :len(srcs[i])] = torch.tensor(srcs[i])
                src_pad[r, :len(srcs[i])] = False
                dec[r, :len(tgts[i])] = torch.tensor([start] + tgts[i][:-1])
            with torch.inference_mode():
                logits, _ = self.model(src.to(self.device), dec.to(self.device),
                                       src_pad=src_pad.to(self.device) if bool(src_pad.any()) else None)
            for r, i in enumerate(group):
                lp = logits[r, :len(tgts[i])].float().log_softmax(-1).cpu()
                tgt = torch.tensor(tgts[i])
                out[i] = (float(lp.gather(1, tgt[:, None]).sum()), len(tgt), bool((lp.argmax(-1) == tgt).all()))
        return out


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
            if len(cont) >= self.context:
                raise ValueError(f"a continuation of {len(cont)} tokens does not fit the {self.context}-token context")
            ctx = ctx[-(self.context - len(cont)):]
            seqs.append(ctx + [self.tok.mask_id] * len(cont))
            spans.append((len(ctx), cont))
        out: list[tuple[float, int, bool] | None] = [None] * len(pairs)
        for group in _chunks_by_budget([len(s) for s in seqs], self.model.cfg.vocab_size):
            T = max(len(seqs[i]) for i in group)
            idx = torch.full((len(group), T), self.pad_id, dtype=torch.long)
            pad = torch.ones(len(group), T, dtype=torch.bool)
            for r, i in enumerate(group):
                idx[r, :len(seqs[i])] = torch.tensor(seqs[i])
                pad[r, :len(seqs[i])] = False
            with torch.inference_mode():
                logits, _ = self.model(idx.to(self.device), pad=pad.to(self.device) if bool(pad.any()) else None)
            for r, i in enumerate(group):
                start, cont = spans[i]
                lp = logits[r, start:start + len(cont)].float().log_softmax(-1).cpu()
                tgt = torch.tensor(cont)
                out[i] = (float(lp.gather(1, tgt[:, None]).sum()), len(cont), bool((lp.argmax(-1) == tgt).all()))
        return out


LLMCYCLE_ADAPTERS = {"decoder": DecoderAdapter, "seq2seq": Seq2SeqAdapter, "encoder": EncoderAdapter}


def llmcycle_adapter(model, tok, run: Path | None = None, name: str = "") -> Adapter:
    family = model.cfg.family
    if family not in LLMCYCLE_ADAPTERS:
        raise ValueError(f"no evaluation adapter for the {family!r} family")
    return LLMCYCLE_ADAPTERS[family](model, tok, run, name)


def load_adapter(run: str | Path | None = None, hf: str | None = None, device: str = "cpu",
                 dtype: str = "float32", chat: bool = False, system: str | None = None,
                 quantize: str | None = None, compile: bool = False) -> Adapter:
    """The adapter for an llmcycle run directory (any family) or a Hugging Face model; `chat` sends
    prompts through the model's chat template (decoders / causal models with a template).
    quantize (int8 | int4 weight-only) and compile (the compiled decoding step) speed up llmcycle runs
    on a CPU, as in `llmcycle generate`."""
    if (run is None) == (hf is None):
        raise ValueError("evaluate either an llmcycle run (--run DIR) or a Hugging Face model (--hf PATH_OR_NAME)")
    if hf is not None and (quantize or compile):
        raise ValueError("--quantize and --compile apply to llmcycle runs (--run); load the HF model with --dtype")
    if hf is not None:
        from llmcycle.evaluation.hf_adapters import hf_adapter

        adapter = hf_adapter(hf, device, dtype)
    else:
        from llmcycle.rundir import load_model, load_tokenizer

        run = Path(run)
        model, _ = load_model(run, device)
        model = model.to(getattr(torch, dtype))
        if quantize:
            from llmcycle.inference.weight_only import quantize_weights

            quantize_weights(model, quantize)
        adapter = llmcycle_adapter(model, load_tokenizer(run), run, run.name + (f" {quantize}" if quantize else ""))
        if compile:
            if not isinstance(adapter, DecoderAdapter):
                raise ValueError(f"--compile applies to decoder runs; this is a {adapter.describe()} model")
            adapter.compile = True
    if chat:
        if not hasattr(adapter, "use_chat"):
            raise ValueError(f"--chat applies to decoder (causal) models; this is a {adapter.describe()} model")
        adapter.use_chat(*([run] if hf is None else []), system)
    return adapter
