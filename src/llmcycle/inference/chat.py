"""Chat: a model's chat template rendered with jinja2, encoded with special-token handling, and an
interactive session with history and streaming output.

How a conversation becomes token ids (the design decision, see `data/tokenizer.py`): our tokenizer
encodes special-token strings found in text as plain text, so that user text can never forge a
control token. A chat template, though, *writes* control tokens (`<|im_start|>`, `<|eot_id|>`...). So
the conversation is rendered to one string exactly as Hugging Face's `apply_chat_template` renders it
(sandboxed jinja2, `trim_blocks`, `lstrip_blocks`, `tojson`, `raise_exception`), and `encode_chat` cuts
that string at the special-token strings the *template* wrote: those become their ids, the text in
between is encoded normally. Special strings inside a message's content stay plain text. Without
such strings in the content the ids equal `apply_chat_template(..., tokenize=True)`; the tokenizer's
own bos is never added (the template writes it when the model wants it, as in Hugging Face).

The run directory carries the template (`rundir.CHAT_TEMPLATE`) and the prompt conventions
(`tokenizer_config.json`: add_bos_token, role tokens; `generation_config.json`: extra stop ids), as
`llmcycle import` writes them; `prompt_style` reads them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, TextIO

from llmcycle import rundir
from llmcycle.inference.generate import GenerationConfig, generate


@dataclass
class PromptStyle:
    """How prompts for one model are built."""

    add_bos: bool  # plain (non-chat) prompts start with bos
    template: str | None = None  # jinja chat template
    bos_token: str | None = None
    eos_token: str | None = None
    stop_tokens: list[str] = field(default_factory=list)  # further tokens that end a reply (Llama 3's <|eom_id|>...)


def prompt_style(run: Path, tok) -> PromptStyle:
    """The prompt conventions of a run directory; a run trained here adds bos and has no template."""
    files = rundir.read_prompt_files(run)
    stops = [tok.id_to_token(i) for i in files.eos_token_ids if i != tok.eos_id]
    name = lambda i: tok.id_to_token(i) if i is not None else None  # noqa: E731
    add_bos = files.add_bos_token if files.add_bos_token is not None else tok.bos_id is not None
    return PromptStyle(add_bos=add_bos, template=files.chat_template, bos_token=name(tok.bos_id),
                       eos_token=name(tok.eos_id), stop_tokens=[s for s in stops if s])


def _raise(message: str):
    from jinja2.exceptions import TemplateError  # jinja2 (not a declared dependency): only to render a template

    raise TemplateError(message)


def render(style: PromptStyle, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The conversation as text, rendered like transformers' `apply_chat_template`."""
    if not style.template:
        raise ValueError("this model has no chat template (import an instruction-tuned model, "
                         "or prompt it without --chat)")
    from jinja2.ext import loopcontrols  # jinja2 (not a declared dependency): only to render a template
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals.update(raise_exception=_raise, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    return env.from_string(style.template).render(
        messages=messages, add_generation_prompt=add_generation_prompt,
        bos_token=style.bos_token or "", eos_token=style.eos_token or "")


def _content_spans(text: str, messages: list[dict]) -> list[tuple[int, int]]:
    """Where each message's content sits in the rendered text (found in order; missing ones skipped)."""
    spans, at = [], 0
    for m in messages:
        content = m.get("content")
        if not isinstance(content, str) or not content:
            continue
        for probe in (content, content.strip()):
            i = text.find(probe, at) if probe else -1
            if i >= 0:
                spans.append((i, i + len(probe)))
                at = i + len(probe)
                break
    return spans


def encode_chat(tok, text: str, messages: list[dict] | None = None) -> list[int]:
    """Ids of a rendered chat: special-token strings written by the template become their ids;
    those inside a message's content (located through `messages`) stay plain text."""
    specials = sorted((s for s in (tok.id_to_token(i) for i in tok.special_ids) if s), key=len, reverse=True)
    if not specials:
        return tok.encode(text)
    spans = _content_spans(text, messages or [])
    ids, start = [], 0
    for m in re.finditer("|".join(map(re.escape, specials)), text):
        if any(a <= m.start() < b for a, b in spans):
            continue  # a special string typed by the user: text
        ids += tok.encode(text[start:m.start()]) if m.start() > start else []
        ids.append(tok.token_to_id(m.group()))
        start = m.end()
    return ids + (tok.encode(text[start:]) if start < len(text) else [])


def chat_encoder(tok, style: PromptStyle, system: str | None = None) -> Callable[[str], list[int]]:
    """For `generate(..., encode=)`: each prompt becomes one user turn (after an optional system turn)."""
    def encode(prompt: str) -> list[int]:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return encode_chat(tok, render(style, messages), messages)

    return encode


class ChatSession:
    """A conversation with history; each turn renders the whole history and generates the reply."""

    def __init__(self, model, tok, style: PromptStyle, gen: GenerationConfig, system: str | None = None) -> None:
        self.model, self.tok, self.style, self.system = model, tok, style, system
        stop = list(gen.stop) + [s for s in style.stop_tokens if s not in gen.stop]
        self.gen = GenerationConfig(**{**gen.__dict__, "stop": stop, "num_samples": 1})
        render(style, [{"role": "user", "content": "hi"}])  # a broken or missing template fails now
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict] = [{"role": "system", "content": self.system}] if self.system else []

    def _prompt_ids(self) -> list[int]:
        """The rendered history, dropping the oldest turns until the reply has room in the context."""
        room = self.model.cfg.max_seq_len - min(self.gen.max_new_tokens, self.model.cfg.max_seq_len // 2)
        while True:
            ids = encode_chat(self.tok, render(self.style, self.messages), self.messages)
            first = 1 if self.system else 0
            if len(ids) <= room or len(self.messages) - first <= 1:
                return ids
            del self.messages[first:first + 2]  # the oldest user turn and its reply

    def send(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        self.messages.append({"role": "user", "content": text})
        ids = self._prompt_ids()
        stream = (lambda r, piece: on_text(piece)) if on_text else None
        reply = generate(self.model, self.tok, [text], self.gen, on_text=stream, encode=lambda _: ids)[0].text
        self.messages.append({"role": "assistant", "content": reply})
        return reply


HELP = "type a message; /reset clears the history, /exit (or Ctrl-D) quits"


def interactive(session: ChatSession, stdin: TextIO, stdout: TextIO, banner: str = "") -> int:
    """Read user turns line by line from stdin and stream the replies to stdout."""
    print(f"{banner}{HELP}", file=stdout, flush=True)
    turns = 0
    while True:
        print("you> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:
            print(file=stdout)
            return turns
        line = line.strip()
        if line in ("/exit", "/quit"):
            return turns
        if line == "/reset":
            session.reset()
            print("(history cleared)", file=stdout, flush=True)
            continue
        if not line:
            continue
        print("assistant> ", end="", file=stdout, flush=True)
        session.send(line, on_text=lambda piece: print(piece, end="", file=stdout, flush=True))
        print(file=stdout, flush=True)
        turns += 1
