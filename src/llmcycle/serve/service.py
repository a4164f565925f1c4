"""From a validated OpenAI request to engine requests and back: prompts, choices, text, logprobs, usage.

    Service.completion(body) / Service.chat(body) -> a Job (its choices are queued on the engine)
    Job.events()        async: ("text", choice, piece) as text becomes certain, ("end", choice) per choice
    Job.cancel()        the client went away: every choice leaves the batch at the next step

The engine thread calls `Request.emit`; `emit` hands the event to the request's asyncio loop, so
everything below `events` runs on the event loop. Stop strings are found here (`TextStream`); a
choice that hits one is cancelled on the engine, which frees its row at the next step.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field

import torch

from llmcycle.inference.chat import encode_chat, render
from llmcycle.serve.engine import QueueFull, Request
from llmcycle.serve.protocol import (MAX_LOGPROBS, APIError, ChatRequest, CompletionRequest, check_common,
                                     check_lengths, sampling_of)
from llmcycle.serve.text import TextStream

COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat: the rest of the context


@dataclass
class Choice:
    index: int
    prompt_index: int
    req: Request
    text: TextStream
    finish: str | None = None
    entries: list[dict] = field(default_factory=list)  # logprobs of the sent tokens
    unsent: list[dict] = field(default_factory=list)  # entries not yet attached to a streamed chunk
    prompt_entries: list | None = None
    first_at: float | None = None
    last_at: float | None = None


class Job:
    def __init__(self, service: "Service", kind: str, prompts: list[list[int]], prompt_texts: list[str],
                 body, stop: list[str], max_tokens: list[int], logprobs: int | None, prompt_logprobs: int | None):
        self.service, self.kind, self.body = service, kind, body
        self.id = ("cmpl-" if kind == "completion" else "chatcmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.prompts, self.prompt_texts = prompts, prompt_texts
        self.queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        sampling = sampling_of(body)
        self.choices: list[Choice] = []
        for p, ids in enumerate(prompts):
            for j in range(body.n):
                i = len(self.choices)
                seed = body.seed + j if body.seed is not None else random.randrange(2**63)
                gen = torch.Generator(device=service.engine.device).manual_seed(seed)
                emit = self._emitter(loop, i)
                stop_ids = set() if body.ignore_eos else service.stop_ids(kind)
                req = Request(ids, max_tokens[p], sampling, gen, stop_ids, emit, logprobs=logprobs,
                              prompt_logprobs=prompt_logprobs, index=i)
                self.choices.append(Choice(i, p, req, TextStream(service.tok, stop)))

    def _emitter(self, loop, i: int):
        def emit(kind: str, payload: dict) -> None:  # on the scheduler thread
            try:
                loop.call_soon_threadsafe(self.queue.put_nowait, (i, kind, payload))
            except RuntimeError:  # the event loop is closed (server shutting down): nobody is listening
                pass

        return emit

    def submit(self) -> None:
        try:
            self.service.engine.submit([c.req for c in self.choices])
        except QueueFull as e:
            raise APIError(503, str(e), code="queue_full") from None
        m = self.service.metrics
        if m is not None:
            m.prompt_tokens.inc(sum(len(p) for p in self.prompts))

    def cancel(self) -> None:
        for c in self.choices:
            c.req.cancel()

    async def events(self):
        open_ = len(self.choices)
        m = self.service.metrics
        while open_:
            i, kind, payload = await self.queue.get()
            c = self.choices[i]
            if c.finish is not None:  # ended by a stop string: the engine's last events do not count
                continue
            if kind == "prompt_logprobs":
                c.prompt_entries = payload["entries"]
            elif kind == "token":
                now = time.perf_counter()
                if c.first_at is None:
                    c.first_at = now
                    if m is not None:
                        m.ttft.observe(now - c.req.arrived)
                c.last_at = now
                if m is not None:
                    m.generated_tokens.inc()
                if payload["token"] in c.req.stop_ids:
                    continue
                piece = c.text.push(payload["token"])
                if payload["logprob"] is not None:
                    c.entries.append(payload["logprob"])
                    c.unsent.append(payload["logprob"])
                if c.text.stopped:
                    c.finish = "stop"
                    c.req.cancel()
                    open_ -= 1
                    yield "text", c, piece
                    yield "end", c, ""
                elif piece or c.unsent:
                    yield "text", c, piece
            elif kind == "done":
                c.finish = "stop" if payload["reason"] == "eos" else "length"
                open_ -= 1
                if m is not None and c.first_at is not None and len(c.req.tokens) > 1 and c.last_at > c.first_at:
                    m.tokens_per_second.observe((len(c.req.tokens) - 1) / (c.last_at - c.first_at))
                yield "text", c, c.text.flush()
                yield "end", c, ""
            elif kind == "error":
                raise APIError(500, payload["message"], code="generation_failed")

    def usage(self) -> dict:
        prompt = sum(len(p) for p in self.prompts)
        completion = sum(len(c.req.tokens) for c in self.choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class Service:
    """The loaded run: model name, tokenizer, prompt style, engine (and metrics, when served)."""

    def __init__(self, name: str, tok, style, engine, metrics=None) -> None:
        self.name, self.tok, self.style, self.engine, self.metrics = name, tok, style, engine, metrics
        self.context = engine.max_len
        self.created = int(time.time())
        extra = {tok.token_to_id(s) for s in style.stop_tokens} - {None}
        self._stop = {"completion": {tok.eos_id} - {None}, "chat": ({tok.eos_id} | extra) - {None}}

    def stop_ids(self, kind: str) -> set[int]:
        return self._stop[kind]

    def _check_model(self, model: str) -> None:
        if model != self.name:
            raise APIError(404, f"The model {model!r} does not exist; this server serves {self.name!r} "
                                "(GET /v1/models)", "model", "model_not_found")

    def _encode(self, prompt) -> tuple[list[list[int]], list[str]]:
        """A completions prompt (text, texts, ids, lists of ids) -> ids and texts per prompt."""
        items = prompt if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else [prompt]
        if not items or any(len(p) == 0 for p in items):
            raise APIError(400, "prompt must not be empty", "prompt")
        ids, texts = [], []
        bos = self.style.add_bos and self.tok.bos_id is not None
        for p in items:
            if isinstance(p, str):
                ids.append(self.tok.encode(p, bos=bos))
                texts.append(p)
            else:
                bad = [t for t in p if not 0 <= t < self.tok.vocab_size]
                if bad:
                    raise APIError(400, f"prompt token id {bad[0]} is outside the vocabulary "
                                        f"(0..{self.tok.vocab_size - 1})", "prompt")
                ids.append(list(p))
                texts.append(self.tok.decode(p))
        return ids, texts

    def completion(self, body: CompletionRequest) -> Job:
        self._check_model(body.model)
        stop = check_common(body)
        if body.logprobs is not None and not 0 <= body.logprobs <= MAX_LOGPROBS:
            raise APIError(400, f"logprobs must be between 0 and {MAX_LOGPROBS}, got {body.logprobs}", "logprobs")
        if body.max_tokens == 0 and not body.echo:
            raise APIError(400, "max_tokens 0 generates nothing; it is allowed only with echo", "max_tokens")
        ids, texts = self._encode(body.prompt)
        max_tokens = [check_lengths(len(p), body.max_tokens, self.context, COMPLETION_DEFAULT_MAX_TOKENS)
                      for p in ids]
        echo_lp = body.logprobs if body.echo and body.logprobs is not None else None
        return Job(self, "completion", ids, texts, body, stop, max_tokens, body.logprobs, echo_lp)

    def chat(self, body: ChatRequest) -> Job:
        self._check_model(body.model)
        stop = check_common(body)
        if not body.messages:
            raise APIError(400, "messages must hold at least one message", "messages")
        if body.top_logprobs is not None and not 0 <= body.top_logprobs <= MAX_LOGPROBS:
            raise APIError(400, f"top_logprobs must be between 0 and {MAX_LOGPROBS}", "top_logprobs")
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", "top_logprobs")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        try:
            text = render(self.style, messages)
        except ValueError as e:
            raise APIError(400, f"{e}; use /v1/completions for this model", "messages") from None
        except Exception as e:  # the template's own raise_exception (e.g. roles out of order)
            raise APIError(400, f"the chat template rejected the messages: {e}", "messages") from None
        ids = encode_chat(self.tok, text, messages)
        limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        if limit == 0:
            raise APIError(400, f"{param} must be >= 1", param)
        max_tokens = [check_lengths(len(ids), limit, self.context, None, param)]
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        return Job(self, "chat", [ids], [text], body, stop, max_tokens, logprobs, None)
