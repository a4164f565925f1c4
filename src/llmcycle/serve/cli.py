"""`llmcycle serve`: a run behind an OpenAI-compatible HTTP server with continuous batching.

    llmcycle serve --run RUN [--host 127.0.0.1] [--port 8000] [--api-key KEY]
                   [--quantize int8|int4] [--compile] [--max-batch 8] [--max-seq-len 2048]

Then any OpenAI client works against http://127.0.0.1:8000/v1 (model name: the run folder's name,
or --model-name), and the playground is at http://127.0.0.1:8000/. Decoder runs only.
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path

from llmcycle.rundir import is_run, load_config, load_model, load_tokenizer

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


def run(args) -> int:
    import uvicorn  # the ASGI stack: only when a server starts

    from llmcycle.serve.app import create_app

    run_dir = Path(args.run)
    if not is_run(run_dir):
        raise ValueError(f"--run {run_dir}: not a run directory (train one, or `llmcycle import` a model there)")
    family = load_config(run_dir).model.family
    if family != "decoder":  # refused before the server starts, not only by /health
        raise ValueError(f"llmcycle serve runs decoder models; {run_dir} is a {family} model")
    if args.threads:
        import torch  # (the same reason)

        torch.set_num_threads(args.threads)
    name = args.model_name or run_dir.resolve().name
    app = create_app(lambda metrics: load_service(run_dir, name, args.quantize, args.compile, args.max_batch,
                                                  args.max_seq_len, args.max_queue, metrics), args.api_key)
    where = f"http://{args.host}:{args.port}"
    print(f"llmcycle serve: {name} at {where}/v1 (playground: {where}/); loading, GET /health says when ready",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
