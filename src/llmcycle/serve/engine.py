"""Continuous batching: one scheduler thread owns the model; requests join and leave at step boundaries.

    submit(req) -> pending queue (bounded: a full queue is refused at once, see QueueFull)
    scheduler loop, each iteration:
        admit   while a row is free: pop a request; the requests popped together are prefilled together
                (left-padded, one forward per group of <= prefill_tokens padded tokens), each prompt
                into its own row of the BatchCache (columns 0..T-1); each samples its first token
                from its last prefill logits
        step    one `DecoderLM.step` for the B running rows (the compiled step with --compile), each
                row at its own position: idx (B, 1), pos = slot (B, 1), cache view (B, K, L, D) with L
                the longest row rounded up to a multiple of 64
        sample  per row, with the request's own SamplingConfig and torch.Generator
        leave   a finished or cancelled request gives its row back; the last running row moves into it

Because each request has its own generator, its own positions and a mask that hides the padding and
the other rows, its tokens do not depend on what else is running (up to float rounding of batched
matmuls): greedy and seeded output
is the same alone or batched. Results go back to the asyncio side through `Request.emit`, called
from the scheduler thread.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from llmcycle.inference.batching import left_pad
from llmcycle.inference.generate import compiled_step
from llmcycle.inference.sampling import SamplingConfig, sample_next
from llmcycle.serve.slots import BatchCache

COLUMN_BUCKET = 64  # the cache view grows in steps of this many columns (fewer distinct shapes)


class QueueFull(Exception):
    """The pending queue is full: the server answers 503 and the client retries later."""


@dataclass
class Request:
    """One sequence to generate (a choice of an HTTP request: n > 1 makes n of them)."""

    prompt: list[int]
    max_tokens: int
    sampling: SamplingConfig
    generator: torch.Generator | None
    stop_ids: set[int]
    emit: Callable[[str, dict], None]  # (kind, payload), called from the scheduler thread
    logprobs: int | None = None  # top alternatives per generated token (0 = the chosen token's only)
    prompt_logprobs: int | None = None  # the same for the prompt tokens (completions echo + logprobs)
    index: int = 0  # the choice index
    cancelled: bool = False  # set by the HTTP side when the client goes away
    arrived: float = field(default_factory=time.perf_counter)
    tokens: list[int] = field(default_factory=list)
    # set by the scheduler
    row: int = -1

    def cancel(self) -> None:
        self.cancelled = True


def _logprob_entry(logits: torch.Tensor, token: int, top: int) -> dict:
    """logits (V,) -> the token's log-probability and the `top` most likely alternatives."""
    lp = torch.log_softmax(logits.float(), -1)
    entry = {"token": token, "logprob": float(lp[token]), "top": []}
    if top:
        vals, ids = lp.topk(min(top, lp.numel()))
        entry["top"] = list(zip(ids.tolist(), vals.tolist()))
    return entry


class Engine:
    """The scheduler. `start()` runs it in a daemon thread; `submit` is thread-safe."""

    def __init__(self, model, max_batch: int = 8, max_len: int | None = None, max_queue: int = 64,
                 compile: bool = False, on_step: Callable[[int], None] | None = None,
                 prefill_tokens: int = 2048) -> None:
        if model.cfg.family != "decoder":
            raise ValueError(f"llmcycle serve runs decoder models; this run is a {model.cfg.family} model "
                             "(generate with `llmcycle generate` or `llmcycle fill-mask` instead)")
        if max_batch < 1:
            raise ValueError(f"--max-batch must be >= 1, got {max_batch}")
        self.model = model.eval()
        cfg = model.cfg
        p = next(model.parameters())
        self.device, self.max_len = p.device, min(max_len or cfg.max_seq_len, cfg.max_seq_len)
        dtype = torch.float32 if p.dtype in (torch.int8, torch.uint8) else p.dtype
        # one column more than a request can fill, so a view is never the whole buffer: its strides then
        # never coincide with a contiguous tensor's, which would make torch.compile build a second graph
        self.cache = BatchCache(cfg.n_layer, max_batch, cfg.kv_heads, cfg.hd, self.max_len + 1, self.device, dtype)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.prefill_tokens = prefill_tokens  # a batched prefill's padded tokens (rows x longest prompt) at most
        self.step_fn = compiled_step(model) if compile else model.step
        self.pending: collections.deque[Request] = collections.deque()
        self.running: list[Request] = []  # running[r] owns cache row r
        self.cond = threading.Condition()
        self.on_step = on_step  # called with the batch size after each step
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # ---------------------------------------------------------------- the HTTP side

    def submit(self, reqs: list[Request]) -> None:
        """Queue a request's choices together, or refuse them all (QueueFull)."""
        with self.cond:
            if self.error is not None:
                raise QueueFull(f"the generation engine stopped after an error: {self.error}")
            if self.stopping:
                raise QueueFull("the server is shutting down")
            if len(self.pending) + len(reqs) > self.max_queue:
                raise QueueFull(f"the request queue is full ({self.max_queue} waiting); retry later")
            self.pending.extend(reqs)
            self.cond.notify()

    def queue_depth(self) -> int:
        return len(self.pending)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="llmcycle-scheduler", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        if self.thread is not None:
            self.thread.join(timeout=10)

    # ---------------------------------------------------------------- the scheduler thread

    def _loop(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    with self.cond:
                        while not self.stopping and not self.pending and not self.running:
                            self.cond.wait(timeout=1.0)
                        if self.stopping:
                            break
                    self._admit()
                    if self.running:
                        self._step()
        except BaseException as e:  # a broken model: fail every request, refuse new ones
            self.error = e
            for req in list(self.running) + list(self.pending):
                req.emit("error", {"message": f"generation failed: {e}"})
            raise
        finally:
            for req in list(self.running) + list(self.pending):
                req.emit("error", {"message": "the server is shutting down"})

    def _admit(self) -> None:
        """Take waiting requests while rows are free and prefill them: the ones that arrived together in
        batches of at most `prefill_tokens` padded tokens (one forward each), a request that wants its
        prompt's log-probabilities alone (it needs every position's logits, not the last one)."""
        new: list[Request] = []
        with self.cond:
            while self.pending and len(self.running) + len(new) < self.max_batch:
                req = self.pending.popleft()
                if not req.cancelled:
                    new.append(req)
        scoring = [r for r in new if r.prompt_logprobs is not None]
        plain = sorted((r for r in new if r.prompt_logprobs is None), key=lambda r: len(r.prompt))
        groups: list[list[Request]] = [[r] for r in scoring]
        for req in plain:  # shortest first, so a group's padding stays small
            g = groups[-1] if groups and groups[-1][0].prompt_logprobs is None else None
            if g is not None and (len(g) + 1) * len(req.prompt) <= self.prefill_tokens:
                g.append(req)
            else:
                groups.append([req])
        for group in groups:
            r0 = len(self.running)
            for i, req in enumerate(group):
                req.row = r0 + i
                self.running.append(req)
            last = self._prefill(group)  # (n, V)
            for req, logits in zip(group, last):
                req.emit("start", {"queued_s": time.perf_counter() - req.arrived})
                if req.max_tokens == 0:  # echo only (log-likelihood scoring)
                    self._finish(req, "length")
                else:
                    self._accept(req, logits)

    def _prefill(self, group: list[Request]) -> torch.Tensor:
        """Prefill the prompts of `group` (rows group[0].row ...) in one forward -> last logits (n, V).
        Left-padded, each row at its own positions 0..len-1, the padding masked (`inference/batching.py`)."""
        prompts = [r.prompt for r in group]
        idx, pad, pos = left_pad(prompts, 0, device=self.device)  # (n, T), (n, T) | None, (n, T) | (T,)
        want_all = group[0].prompt_logprobs is not None  # a scoring request is alone in its group
        cache = self.cache.prefill(group[0].row, [len(p) for p in prompts])
        logits, _ = self.model(idx, cache=cache, pos=pos, pad=pad, last_only=not want_all)  # (n, T|1, V)
        if want_all:
            req = group[0]
            entries = [None] + [_logprob_entry(logits[0, t - 1], req.prompt[t], req.prompt_logprobs)
                                for t in range(1, len(req.prompt))]
            req.emit("prompt_logprobs", {"entries": entries})
        return logits[:, -1]

    def _step(self) -> None:
        rows = self.running
        B = len(rows)
        pos = torch.tensor([[len(r.prompt) + len(r.tokens) - 1] for r in rows], device=self.device)  # (B, 1)
        idx = torch.tensor([[r.tokens[-1]] for r in rows], device=self.device)  # (B, 1)
        longest = int(pos.max()) + 1
        L = min(self.max_len, -(-longest // COLUMN_BUCKET) * COLUMN_BUCKET)
        logits = self.step_fn(idx, pos, self.cache.view(B, L), pos, None)[:, -1]  # (B, V)
        for req, row_logits in zip(list(rows), logits):
            self._accept(req, row_logits)
        if self.on_step is not None:
            self.on_step(B)

    def _accept(self, req: Request, logits: torch.Tensor) -> None:
        """Sample the request's next token from its logits (V,), emit it, and end it if it is done."""
        if req.cancelled:
            return self._finish(req, "cancelled")
        token = int(sample_next(logits[None], req.sampling, req.generator)[0])
        req.tokens.append(token)
        entry = _logprob_entry(logits, token, req.logprobs) if req.logprobs is not None else None
        req.emit("token", {"token": token, "logprob": entry})
        if token in req.stop_ids:
            self._finish(req, "eos")
        elif len(req.tokens) >= req.max_tokens or len(req.prompt) + len(req.tokens) >= self.max_len:
            self._finish(req, "length")

    def _finish(self, req: Request, reason: str) -> None:
        """The request leaves: the last running row moves into its row."""
        r = req.row
        last = self.running.pop()
        if last is not req:
            self.cache.move(last.row, r, len(last.prompt) + len(last.tokens))
            last.row = r
            self.running[r] = last
        req.row = -1
        req.emit("done", {"reason": None if reason == "cancelled" else reason})
