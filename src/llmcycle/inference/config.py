"""Generation settings, torch-free: how the next token is chosen and how a completion ends.

    SamplingConfig    temperature / top-k / top-p (`sampling.py` applies them to logits)
    GenerationConfig  max_new_tokens, stop strings, seed, samples per prompt, truncation, cache, compile

One set of defaults for every caller (`generate`, `chat`, `eval`, `serve`, the lifecycle): greedy
decoding (temperature 0: deterministic, as Hugging Face's do_sample=False), 128 new tokens, top-k and
top-p off, no seed. The command-line flags are generated from these fields (`inference/cli.py`); a
field's help is the comment written after it. Importing this module does not import torch, so
`--help` and `llmcycle plan` stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingConfig:
    temperature: float = 0.0  # 0 = greedy (argmax, deterministic); higher = more random
    top_k: int | None = None  # sample only among the k most likely tokens (None: off)
    top_p: float | None = None  # nucleus sampling: the smallest set of tokens with mass >= p (None: off)

    def __post_init__(self) -> None:
        if not 0 <= self.temperature < float("inf"):  # nan fails too
            raise ValueError(f"temperature must be >= 0 and finite (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def describe(self, short: bool = False) -> str:
        """'greedy', or 'temperature 0.7, top-k 40'; short: 't=0.7,k=40' (evaluation column labels,
        the form `parse` reads)."""
        if self.temperature == 0:
            return "greedy"
        t, k, p, sep = ("t=", "k=", "p=", ",") if short else ("temperature ", "top-k ", "top-p ", ", ")
        parts = [f"{t}{self.temperature:g}"]
        if self.top_k:
            parts.append(f"{k}{self.top_k}")
        if self.top_p:
            parts.append(f"{p}{self.top_p:g}")
        return sep.join(parts)

    @classmethod
    def parse(cls, text: str) -> "SamplingConfig":
        """'greedy' or 't=0.7,k=40' / 't=1.0,p=0.9' (t temperature, k top-k, p top-p): `describe(short=True)`
        read back."""
        text = text.strip()
        if text == "greedy":
            return cls()
        kw: dict = {}
        names = {"t": "temperature", "k": "top_k", "p": "top_p"}
        for part in filter(None, text.split(",")):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in names:
                raise ValueError(f"bad setting {text!r}: write 'greedy' or e.g. 't=0.7,k=40' or 't=1.0,p=0.9'")
            key = names[key.strip()]
            kw[key] = int(value) if key == "top_k" else float(value)
        return cls(**kw)


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128  # tokens to generate at most
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    stop: list[str] = field(default_factory=list)  # stop string; the completion ends before it (repeatable)
    seed: int | None = None  # random seed: one seed gives one text (None: unseeded)
    num_samples: int = 1  # completions per prompt
    truncate: str = "error"  # a prompt longer than the context: error, or left = keep its last tokens
    use_cache: bool = True  # KV cache; --no-cache recomputes the whole context per token (slow reference)
    stop_at_eos: bool = True  # end a completion at the tokenizer's end-of-sequence token
    compile: bool = False  # decode through a torch.compile'd step: faster per token, compiles for tens of seconds first

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.truncate not in ("error", "left"):
            raise ValueError(f"truncate must be 'error' or 'left', got {self.truncate!r}")
        if self.compile and not self.use_cache:
            raise ValueError("compile needs the KV cache: drop --no-cache or --compile")
