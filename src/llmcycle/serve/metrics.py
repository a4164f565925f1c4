"""Prometheus metrics of one server (`GET /metrics`), in a registry of their own.

    llmcycle_requests_total{endpoint, status}      HTTP requests answered
    llmcycle_prompt_tokens_total                   prompt tokens queued
    llmcycle_generation_tokens_total               tokens generated
    llmcycle_queue_depth                           requests waiting for a batch row
    llmcycle_running_requests                      rows in the running batch
    llmcycle_time_to_first_token_seconds           arrival -> first generated token
    llmcycle_tokens_per_second                     per request, after its first token
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llmcycle_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("llmcycle_prompt_tokens", "prompt tokens queued", registry=r)
        self.generated_tokens = Counter("llmcycle_generation_tokens", "tokens generated", registry=r)
        self.queue_depth = Gauge("llmcycle_queue_depth", "requests waiting for a batch row", registry=r)
        self.running = Gauge("llmcycle_running_requests", "rows in the running batch", registry=r)
        self.ttft = Histogram("llmcycle_time_to_first_token_seconds", "arrival to first generated token",
                              buckets=TTFT_BUCKETS, registry=r)
        self.tokens_per_second = Histogram("llmcycle_tokens_per_second", "decoding rate of a request after "
                                           "its first token", buckets=RATE_BUCKETS, registry=r)

    def watch(self, engine) -> None:
        """Read the engine's queue and batch sizes at each scrape."""
        self.queue_depth.set_function(engine.queue_depth)
        self.running.set_function(lambda: len(engine.running))

    def render(self) -> bytes:
        return generate_latest(self.registry)
