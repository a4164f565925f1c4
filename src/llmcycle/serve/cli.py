"""`llmcycle serve`: a run behind an OpenAI-compatible HTTP server with continuous batching.

    llmcycle serve --run RUN [--host 127.0.0.1] [--port 8000] [--api-key KEY]
                   [--quantize int8|int4] [--compile] [--max-batch 8] [--max-seq-len 2048]

Then any OpenAI client works against http://127.0.0.1:8000/v1 (model name: the run folder's name,
or --model-name), and the playground is at http://127.0.0.1:8000/. Decoder runs only. What would
fail once the server is up (no checkpoint, a damaged one, a tokenizer that does not match, a port in
use, an empty API key...) is refused first, in one line (`precheck`).
"""

from __future__ import annotations

import argparse
import errno
import os
import threading
from pathlib import Path

from llmcycle.rundir import adapter_path, is_run, load_config, load_model, load_tokenizer, weights_path

DEFAULT_MAX_SEQ_LEN = 2048


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory with a trained or imported decoder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--api-key", default=os.environ.get("LLMCYCLE_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 routes (default: $LLMCYCLE_API_KEY, else none)")
    p.add_argument("--model-name", default=None, help="the model id clients send (default: the run folder's name)")
    p.add_argument("--quantize", choices=["int8", "int4"], default=None,
                   help="weight-only int8/int4 linear layers: faster CPU decoding, approximate (default: fp32)")
    p.add_argument("--compile", action="store_true",
                   help="decode the batch through the torch.compile'd step (compiles while /health says loading)")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together (KV-cache rows)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for a row; more get 503")
    p.add_argument("--max-seq-len", type=int, default=DEFAULT_MAX_SEQ_LEN,
                   help="tokens per request, prompt + completion (capped at the model's context; "
                        "sets the KV-cache size: rows x this)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log-level", default="warning", help="uvicorn's log level")


def load_service(run: Path, name: str, quantize: str | None = None, compile: bool = False, max_batch: int = 8,
                 max_seq_len: int | None = None, max_queue: int = 64, metrics=None, warmup: bool = True):
    """The run's model, tokenizer and prompt style behind a started Engine."""
    from llmcycle.inference.chat import prompt_style  # torch and the model: only when a server starts (--help stays fast)
    from llmcycle.serve.engine import Engine
    from llmcycle.serve.service import Service

    model, cfg = load_model(run)
    if cfg.model.family != "decoder":
        raise ValueError(f"llmcycle serve runs decoder models; {run} is a {cfg.model.family} model")
    if quantize:
        from llmcycle.inference.weight_only import quantize_weights  # (the same reason)

        quantize_weights(model, quantize)
    tok = load_tokenizer(run)
    engine = Engine(model, max_batch, max_seq_len, max_queue, compile)
    if metrics is not None:
        metrics.watch(engine)
    engine.start()
    service = Service(name, tok, prompt_style(run, tok), engine, metrics)
    if warmup:
        _warm_up(engine, tok, min(2, max_batch))
    return service


def _warm_up(engine, tok, rows: int) -> None:
    """Decode a few tokens at batch sizes 1 and `rows` (compiles the step's graphs before /health says ok)."""
    import torch  # torch: only when a server starts

    from llmcycle.inference.sampling import SamplingConfig
    from llmcycle.serve.engine import Request

    for batch in sorted({1, rows}):
        left = threading.Semaphore(0)
        reqs = [Request(tok.encode("warm up", bos=tok.bos_id is not None), 4, SamplingConfig(temperature=0),
                        torch.Generator(), set(), lambda kind, _: left.release() if kind == "done" else None)
                for _ in range(batch)]
        engine.submit(reqs)
        for _ in reqs:
            if not left.acquire(timeout=600):
                raise RuntimeError("the warm-up generation did not finish in 10 minutes")


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's


def precheck(args) -> None:
    """Refuse, before a server starts, what would otherwise fail once it is up (a model that cannot
    load, reported only by /health) or make it fail to start (a port it cannot bind)."""
    run_dir = Path(args.run)
    if not is_run(run_dir):
        raise ValueError(f"--run {run_dir}: not a run directory (train one, or `llmcycle import` a model there)")
    for flag, value, low in (("--port", args.port, 0), ("--max-batch", args.max_batch, 1),
                             ("--max-queue", args.max_queue, 0), ("--max-seq-len", args.max_seq_len, 2),
                             ("--threads", args.threads, 1)):
        if value is not None and value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if args.port > 65535:
        raise ValueError(f"--port must be a TCP port, 0..65535 (0: any free one), got {args.port}")
    if args.api_key is not None and not args.api_key.strip():
        raise ValueError("the API key is empty (--api-key or $LLMCYCLE_API_KEY): any client would pass; give a "
                         "key, or leave both out to serve without one")
    if args.model_name is not None and not args.model_name.strip():
        raise ValueError("--model-name is empty: give the name clients send, or leave it out (the run's folder name)")
    if args.log_level.lower() not in LOG_LEVELS:
        raise ValueError(f"--log-level {args.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    family = load_config(run_dir).model.family
    if family != "decoder":  # refused before the server starts, not only by /health
        raise ValueError(f"llmcycle serve runs decoder models; {run_dir} is a {family} model")
    if adapter_path(run_dir).is_file():
        raise ValueError(f"{run_dir} is a LoRA fine-tune (base weights + adapters): merge it first, "
                         f"`llmcycle finetune --run {run_dir} --merge {run_dir}-merged`, and serve {run_dir}-merged")
    _check_weights(weights_path(run_dir))  # a missing checkpoint says to train first
    load_tokenizer(run_dir)  # missing, or not the tokenizer the run's data was made with
    _check_bind(args.host, args.port)


def _check_weights(path: Path) -> None:
    """The safetensors header parses (a truncated or foreign file fails here, not after startup)."""
    from safetensors import safe_open  # reads the header only; no torch

    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except Exception as e:  # safetensors' own error says what is wrong
        raise ValueError(f"{path} cannot be read as safetensors ({e}): the newest checkpoint is damaged or "
                         f"incomplete; delete {path.parent} to serve the one before it, or train again") from None


def _check_bind(host: str, port: int) -> None:
    """Bind and release host:port as uvicorn will (SO_REUSEADDR): an unknown host or a port in use is
    one line now rather than uvicorn's log after the model has loaded."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"--host {host}: cannot resolve it ({e.strerror}); give an address such as 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            hint = "choose another --port or stop what holds it" if e.errno == errno.EADDRINUSE else \
                "choose another --host / --port (ports below 1024 need privileges)"
            raise ValueError(f"cannot listen on {host}:{port}: {e.strerror}; {hint}") from None


def run(args) -> int:
    precheck(args)
    import uvicorn  # the ASGI stack: only when a server starts

    from llmcycle.serve.app import create_app

    run_dir = Path(args.run)
    if args.threads:
        import torch  # (the same reason)

        torch.set_num_threads(args.threads)
    name = args.model_name or run_dir.resolve().name
    app = create_app(lambda metrics: load_service(run_dir, name, args.quantize, args.compile, args.max_batch,
                                                  args.max_seq_len, args.max_queue, metrics), args.api_key)
    where = f"http://{args.host}:{args.port}"
    print(f"llmcycle serve: {name} at {where}/v1 (playground: {where}/); loading, GET /health says when ready",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0
