"""OpenAI response bodies: whole responses, server-sent-event chunks, and the logprobs objects.

    completion:  {"id", "object": "text_completion", "created", "model", "choices": [{"index", "text",
                  "logprobs": {"tokens", "token_logprobs", "top_logprobs", "text_offset"} | null,
                  "finish_reason"}], "usage"}
    chat:        {"object": "chat.completion", "choices": [{"index", "message": {"role", "content"},
                  "logprobs": {"content": [{"token", "logprob", "bytes", "top_logprobs"}]} | null,
                  "finish_reason"}], "usage"}
    chunks:      the same with "object": "text_completion" / "chat.completion.chunk", a text piece or a
                 "delta" per choice, "finish_reason" on its last chunk; with stream_options.include_usage
                 every chunk has "usage": null and a last chunk with no choices carries it.
"""

from __future__ import annotations

import json


def _tok(tok, token: int) -> str:
    return tok.decode([token])


def chat_logprobs(tok, entries: list) -> dict:
    def item(token: int, lp: float) -> dict:
        text = _tok(tok, token)
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    return {"content": [{**item(e["token"], e["logprob"]), "top_logprobs": [item(t, lp) for t, lp in e["top"]]}
                        for e in entries]}


def _completion_choice(job, c, tok) -> dict:
    prompt_text = job.prompt_texts[c.prompt_index]
    echo = job.body.echo
    text = (prompt_text if echo else "") + c.text.text
    lp = None
    if job.body.logprobs is not None:
        entries = c.entries
        if echo:  # the prompt's tokens first: the first has no prediction
            prompt = c.prompt_entries if c.prompt_entries is not None else [None]
            first = {"token": job.prompts[c.prompt_index][0], "logprob": None, "top": None}
            entries = [first] + [e for e in prompt[1:]] + entries
        lp = completion_logprobs_list(tok, entries)
    return {"index": c.index, "text": text, "logprobs": lp, "finish_reason": c.finish}


def completion_logprobs_list(tok, entries: list, offset: int = 0) -> dict:
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for e in entries:
        text = _tok(tok, e["token"])
        out["tokens"].append(text)
        out["token_logprobs"].append(e["logprob"])
        out["top_logprobs"].append(None if e["top"] is None else {_tok(tok, t): lp for t, lp in e["top"]})
        out["text_offset"].append(offset)
        offset += 0 if e["token"] in tok.special_ids else len(text)  # a prompt's bos is not in the echoed text
    return out


def response(job, tok) -> dict:
    """The whole (non-streamed) response once every choice has ended."""
    head = {"id": job.id, "created": job.created, "model": job.service.name}
    if job.kind == "completion":
        choices = [_completion_choice(job, c, tok) for c in job.choices]
        return {**head, "object": "text_completion", "choices": choices, "usage": job.usage()}
    choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text.text},
                "logprobs": chat_logprobs(tok, c.entries) if job.body.logprobs else None,
                "finish_reason": c.finish} for c in job.choices]
    return {**head, "object": "chat.completion", "choices": choices, "usage": job.usage()}


def sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class Chunks:
    """The chunk stream of one job: `first()` (chat: the role), `piece(c, text)`, `end(c)`, `usage()`."""

    def __init__(self, job, tok) -> None:
        self.job, self.tok = job, tok
        self.include_usage = bool(job.body.stream_options and job.body.stream_options.include_usage)
        self.chat = job.kind == "chat"
        self.offsets = [0] * len(job.choices)

    def _chunk(self, choices: list[dict]) -> str:
        obj = {"id": self.job.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
               "created": self.job.created, "model": self.job.service.name, "choices": choices}
        if self.include_usage:
            obj["usage"] = None
        return sse(obj)

    def first(self) -> list[str]:
        """Chat streams open with the role; a completion with echo opens with the prompt."""
        out = []
        for c in self.job.choices:
            if self.chat:
                out.append(self._chunk([{"index": c.index, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}]))
        return out

    def echo(self, c) -> str:
        text = self.job.prompt_texts[c.prompt_index]
        lp = None
        if self.job.body.logprobs is not None:
            prompt = c.prompt_entries or [None]
            first = {"token": self.job.prompts[c.prompt_index][0], "logprob": None, "top": None}
            lp = completion_logprobs_list(self.tok, [first] + list(prompt[1:]))
            self.offsets[c.index] = len(text)
        return self._chunk([{"index": c.index, "text": text, "logprobs": lp, "finish_reason": None}])

    def piece(self, c, text: str, finish: str | None = None) -> str:
        entries, c.unsent = c.unsent, []
        if self.chat:
            lp = chat_logprobs(self.tok, entries) if self.job.body.logprobs else None
            delta = {"content": text} if text or finish is None else {}
            return self._chunk([{"index": c.index, "delta": delta, "logprobs": lp, "finish_reason": finish}])
        lp = None
        if self.job.body.logprobs is not None:
            lp = completion_logprobs_list(self.tok, entries, self.offsets[c.index])
            self.offsets[c.index] += sum(len(t) for t in lp["tokens"])
        return self._chunk([{"index": c.index, "text": text, "logprobs": lp, "finish_reason": finish}])

    def usage(self) -> str | None:
        if not self.include_usage:
            return None
        return sse({"id": self.job.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                    "created": self.job.created, "model": self.job.service.name, "choices": [],
                    "usage": self.job.usage()})
