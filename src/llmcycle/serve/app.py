"""The HTTP side: an OpenAI-compatible FastAPI app over one `Service`.

    GET  /                      the playground page (static/index.html)
    GET  /health                503 {"status": "loading"} until the model is loaded, then 200
    GET  /metrics               Prometheus text format (metrics.py)
    GET  /v1/models             the served model
    POST /v1/completions        text completion, `stream: true` as server-sent events
    POST /v1/chat/completions   chat completion with the run's chat template

`create_app(load)` returns at once; `load()` (reading and warming up the model) runs in a thread when
the app starts, so /health can say "loading". With an API key every /v1 route wants
`Authorization: Bearer KEY` (401 otherwise). Errors are OpenAI's error objects with their status.
A streaming client that disconnects cancels its choices, which leave the batch at the next step; a
waiting non-streamed one is noticed within a quarter of a second.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmcycle.serve.metrics import Metrics
from llmcycle.serve.protocol import APIError, ChatRequest, CompletionRequest, parse
from llmcycle.serve.responses import Chunks, response, sse

PAGE = Path(__file__).parent / "static" / "index.html"


def create_app(load: Callable[[Metrics], object], api_key: str | None = None) -> FastAPI:
    """load(metrics) -> a started Service; it runs in a background thread at startup."""
    metrics = Metrics()
    state: dict = {"service": None, "error": None}

    def loader() -> None:
        try:
            state["service"] = load(metrics)
        except BaseException as e:  # reported by /health and every /v1 route
            state["error"] = e

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        thread = threading.Thread(target=loader, name="llmcycle-load", daemon=True)
        thread.start()
        yield
        if state["service"] is not None:
            state["service"].engine.stop()

    app = FastAPI(title="llmcycle serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.llm = state

    def service():
        if state["error"] is not None:
            raise APIError(503, f"the model failed to load: {state['error']}", code="model_load_failed")
        if state["service"] is None:
            raise APIError(503, "the model is still loading; retry when GET /health answers 200", code="loading")
        return state["service"]

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise APIError(401, "Missing API key: send it as 'Authorization: Bearer KEY'", code="missing_api_key")
        if not secrets.compare_digest(header[len("Bearer "):].strip().encode(), api_key.encode()):
            raise APIError(401, "Incorrect API key provided", code="invalid_api_key")

    async def body_of(request: Request, cls):
        raw = await request.body()
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"We could not parse the JSON body of your request ({e}).",
                           code="invalid_json") from None
        return parse(cls, data)

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        headers = {"Retry-After": "1"} if e.status == 503 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return JSONResponse(APIError(e.status_code, str(e.detail)).body(), status_code=e.status_code)

    @app.middleware("http")
    async def count(request: Request, call_next):
        resp = await call_next(request)
        if request.url.path.startswith("/v1/"):
            metrics.requests.labels(request.url.path, str(resp.status_code)).inc()
        return resp

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health")
    async def health():
        if state["error"] is not None:
            return JSONResponse({"status": "error", "message": str(state["error"])}, status_code=503)
        if state["service"] is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok", "model": state["service"].name}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        s = service()
        return {"object": "list", "data": [{"id": s.name, "object": "model", "created": s.created,
                                            "owned_by": "llmcycle", "max_model_len": s.context}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request)
        s = service()
        return await run(s.completion(await body_of(request, CompletionRequest)), s, request)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        authorize(request)
        s = service()
        return await run(s.chat(await body_of(request, ChatRequest)), s, request)

    return app


async def run(job, s, request: Request):
    job.submit()  # a full queue answers 503 here, before any byte is sent
    if job.body.stream:
        return StreamingResponse(stream(job, s), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def drain() -> None:
        async for _ in job.events():
            pass

    task = asyncio.ensure_future(drain())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                return Response(status_code=499)
        task.result()  # an engine failure raises its APIError here
    finally:
        job.cancel()  # no-op for finished choices; frees the rows of abandoned ones
    return response(job, s.tok)


async def stream(job, s):
    chunks = Chunks(job, s.tok)
    echoed: set[int] = set()
    try:
        for line in chunks.first():
            yield line
        async for kind, c, piece in job.events():
            if job.kind == "completion" and job.body.echo and c.index not in echoed:
                echoed.add(c.index)
                yield chunks.echo(c)
            if kind == "text":
                if piece or c.unsent:
                    yield chunks.piece(c, piece)
            else:
                yield chunks.piece(c, "", c.finish)
        usage = chunks.usage()
        if usage:
            yield usage
        yield "data: [DONE]\n\n"
    except APIError as e:
        yield sse(e.body())
    finally:
        job.cancel()  # a client that went away: its rows are freed at the next step
