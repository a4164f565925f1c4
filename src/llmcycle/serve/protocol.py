"""The OpenAI request bodies the server accepts, validated strictly, and its error shape.

    POST /v1/completions        CompletionRequest (prompt: text, texts, token ids or lists of them)
    POST /v1/chat/completions   ChatRequest (messages rendered with the run's chat template)

Strict types as OpenAI's API has them ("5" is not an integer); unknown fields are ignored, as by
OpenAI and vLLM (user, presence_penalty...). `top_k` is an extra field as vLLM accepts it (-1 or 0:
off), and so is `ignore_eos`. Every user mistake is an `APIError`, which the app turns into
    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}
with its HTTP status.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, ValidationError

from llmcycle.inference.sampling import SamplingConfig

MAX_N = 16  # choices per request
MAX_LOGPROBS = 20  # alternatives per token (completions: logprobs; chat: top_logprobs)


class APIError(Exception):
    TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
             429: "rate_limit_error", 503: "server_error"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: Union[str, list[str], None] = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # vLLM's extra: generate max_tokens whatever the model says (benchmarks)


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    logprobs: int | None = None
    echo: bool = False


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(_Sampling):
    messages: list[Message]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None


def parse(cls: type[_Body], data) -> _Body:
    """A JSON value -> a validated request, or a 400 naming the first bad field."""
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err["loc"] if not str(p).startswith(("str", "list[", "int", "union"))]
        param = ".".join(loc) or None
        raise APIError(400, f"invalid field {param!r}: {err['msg']} (got {err.get('input')!r})"
                       if param else err["msg"], param=param) from None


def sampling_of(req: _Sampling) -> SamplingConfig:
    """OpenAI's sampling fields -> our SamplingConfig (OpenAI's defaults: temperature 1, top_p 1)."""
    t = 1.0 if req.temperature is None else req.temperature
    if not 0.0 <= t <= 2.0:
        raise APIError(400, f"temperature must be in [0, 2], got {t}", "temperature")
    p = req.top_p
    if p is not None and not 0.0 < p <= 1.0:
        raise APIError(400, f"top_p must be in (0, 1], got {p}", "top_p")
    k = req.top_k
    if k is not None and k < -1:
        raise APIError(400, f"top_k must be -1 or 0 (off) or a positive count, got {k}", "top_k")
    return SamplingConfig(temperature=t, top_k=k if k and k > 0 else None, top_p=p if p is not None and p < 1 else None)


def check_common(req: _Sampling) -> list[str]:
    """Validate n and stop; returns the stop strings."""
    if not 1 <= req.n <= MAX_N:
        raise APIError(400, f"n must be between 1 and {MAX_N}, got {req.n}", "n")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4 or any(not s for s in stop):
        raise APIError(400, "stop takes up to 4 non-empty strings", "stop")
    return stop


def check_lengths(prompt_len: int, max_tokens: int | None, context: int, default: int | None,
                  param: str = "max_tokens") -> int:
    """The number of tokens to generate, or a 400 naming the lengths (as vLLM words it)."""
    if prompt_len >= context:
        raise APIError(400, f"This model's maximum context length is {context} tokens. However, your prompt is "
                            f"{prompt_len} tokens, leaving no room for the completion. Please shorten the prompt.",
                       "prompt", "context_length_exceeded")
    if max_tokens is None:
        room = context - prompt_len
        return room if default is None else min(default, room)
    if max_tokens < 0:
        raise APIError(400, f"{param} must be >= 0, got {max_tokens}", param)
    if prompt_len + max_tokens > context:
        raise APIError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                            f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} for the "
                            f"completion). Please reduce the prompt or {param}.", param, "context_length_exceeded")
    return max_tokens
