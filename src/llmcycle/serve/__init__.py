"""The deploy stage: `llmcycle serve`, an OpenAI-compatible HTTP server over a run's decoder.

    engine.py     continuous batching: one scheduler thread owns the model and the batch
    slots.py      the batch's KV cache: one row per request, each row at its own position
    protocol.py   request bodies (strict), sampling fields, lengths, the error shape
    service.py    a request -> engine requests (choices) -> text, logprobs, usage
    text.py       streamed text: whole characters, stop strings held back and cut
    responses.py  OpenAI response bodies and server-sent-event chunks
    metrics.py    Prometheus metrics
    app.py        the FastAPI app: routes, auth, health, streaming, disconnects
    cli.py        `llmcycle serve`
    static/       the playground page served at /
"""
