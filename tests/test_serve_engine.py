"""The continuous-batching scheduler: a request's tokens do not depend on what runs beside it.

Greedy and seeded sampling give the same tokens alone and batched with requests that join at other
steps and have other lengths; greedy equals `generate_ids`, the reference engine; rows are reused
after requests leave; a cancelled request leaves at the next step; the int8 path serves the batch."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from conftest import tiny_model
from llmcycle.inference.generate import generate_ids
from llmcycle.inference.sampling import SamplingConfig
from llmcycle.models import build_model
from llmcycle.serve.engine import Engine, QueueFull, Request

GREEDY = SamplingConfig(temperature=0)
HOT = SamplingConfig(temperature=1.3, top_k=40, top_p=0.95)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_model(vocab_size=300, max_seq_len=128)).eval()


class Collect:
    """A request whose emitted tokens are recorded; `wait()` blocks until it is done."""

    def __init__(self, prompt, max_tokens, sampling=GREEDY, seed=None, stop_ids=()):
        self.done, self.reason = threading.Event(), None
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.req = Request(list(prompt), max_tokens, sampling, gen, set(stop_ids), self.emit)
        self.tokens: list[int] = []
        self.on_token = None

    def emit(self, kind, payload):
        if kind == "token":
            self.tokens.append(payload["token"])
            if self.on_token:
                self.on_token(len(self.tokens))
        elif kind == "done":
            self.reason = payload["reason"]
            self.done.set()

    def wait(self, timeout: float = 30):
        assert self.done.wait(timeout), "request did not finish"
        return self.tokens


def run_alone(engine, prompt, n, **kw):
    c = Collect(prompt, n, **kw)
    engine.submit([c.req])
    return c.wait()


PROMPTS = [[5, 17, 99, 4, 250], [7] * 23, list(range(40, 51)), [3, 1, 4, 1, 5, 9, 2, 6]]


@pytest.fixture(scope="module")
def engine(model):
    e = Engine(model, max_batch=4, max_len=128)
    e.start()
    yield e
    e.stop()


def test_greedy_alone_equals_the_reference_engine(engine, model):
    for p in PROMPTS[:2]:
        ref = generate_ids(model, [p], 20, GREEDY)[0]
        assert run_alone(engine, p, 20) == ref


@pytest.mark.parametrize("sampling,seed", [(GREEDY, None), (HOT, 11)])
def test_tokens_are_the_same_alone_and_batched(engine, sampling, seed):
    alone = [run_alone(engine, p, 30, sampling=sampling, seed=None if seed is None else seed + i)
             for i, p in enumerate(PROMPTS)]
    # now together, joining at different steps: the 2nd arrives when the 1st has 5 tokens, and so on
    cs = [Collect(p, 30, sampling=sampling, seed=None if seed is None else seed + i) for i, p in enumerate(PROMPTS)]
    for i in range(len(cs) - 1):
        nxt = cs[i + 1]
        cs[i].on_token = lambda n, nxt=nxt: engine.submit([nxt.req]) if n == 5 else None
    engine.submit([cs[0].req])
    together = [c.wait() for c in cs]
    assert together == alone
    if seed is not None:  # sampling really samples: other seeds, other texts
        assert run_alone(engine, PROMPTS[0], 30, sampling=sampling, seed=seed + 100) != alone[0]


@pytest.mark.parametrize("sampling,seed", [(GREEDY, None), (HOT, 5)])
@pytest.mark.parametrize("budget,forwards", [
    ({}, [(4, 23)]),  # one left-padded forward of the longest prompt's length
    ({"prefill_tokens": 24}, [(2, 8), (1, 11), (1, 23)]),  # a padded-token budget splits the group, shortest
])                                                         # first: 5 + 8 tokens padded to 2 x 8; 11 and 23 alone
def test_requests_that_arrive_together_are_prefilled_together(model, engine, sampling, seed, budget, forwards):
    """Prompts of different lengths queued before the scheduler runs are prefilled in left-padded
    forwards (counted with a forward hook: decoding steps do not go through `forward`), and each gives
    the tokens it gives alone."""
    def seed_of(i):
        return None if seed is None else seed + i

    assert sorted(len(p) for p in PROMPTS) == [5, 8, 11, 23]
    alone = [run_alone(engine, p, 16, sampling=sampling, seed=seed_of(i)) for i, p in enumerate(PROMPTS)]
    e = Engine(model, max_batch=4, max_len=128, **budget)
    cs = [Collect(p, 16, sampling=sampling, seed=seed_of(i)) for i, p in enumerate(PROMPTS)]
    e.submit([c.req for c in cs])  # all queued before the scheduler starts: one admission
    seen = []
    hook = model.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
    e.start()
    try:
        assert [c.wait() for c in cs] == alone
    finally:
        hook.remove()
        e.stop()
    assert seen == forwards


def test_more_requests_than_rows_queue_and_reuse_rows(engine):
    alone = [run_alone(engine, p, 12) for p in PROMPTS]
    cs = [Collect(PROMPTS[i % 4], 12) for i in range(10)]  # 10 requests, 4 rows
    engine.submit([c.req for c in cs])
    assert [c.wait() for c in cs] == [alone[i % 4] for i in range(10)]
    assert engine.running == [] and engine.queue_depth() == 0


def test_stop_ids_and_cancel_end_a_request(engine):
    free = run_alone(engine, PROMPTS[0], 20)
    c = Collect(PROMPTS[0], 20, stop_ids={free[3]})
    engine.submit([c.req])
    assert c.wait() == free[:free.index(free[3]) + 1] and c.reason == "eos"
    c = Collect(PROMPTS[1], 100)
    c.on_token = lambda n: c.req.cancel() if n == 3 else None
    engine.submit([c.req])
    assert len(c.wait()) == 3 and c.reason is None


def test_a_full_queue_is_refused(model):
    e = Engine(model, max_batch=1, max_len=64, max_queue=2)  # not started: nothing leaves the queue
    e.submit([Collect([1, 2], 4).req, Collect([1, 2], 4).req])
    with pytest.raises(QueueFull):
        e.submit([Collect([1, 2], 4).req])


def test_other_families_are_refused():
    enc = build_model(tiny_model(family="encoder", vocab_size=300))
    with pytest.raises(ValueError, match="decoder"):
        Engine(enc)


def test_int8_model_batched_equals_alone(model):
    import copy

    from llmcycle.inference.weight_only import quantize_weights

    q = quantize_weights(copy.deepcopy(model), "int8")
    e = Engine(q, max_batch=4, max_len=128)
    e.start()
    try:
        alone = [run_alone(e, p, 16) for p in PROMPTS]
        cs = [Collect(p, 16) for p in PROMPTS]
        e.submit([c.req for c in cs])
        assert [c.wait() for c in cs] == alone
        assert alone[0] == generate_ids(q, [PROMPTS[0]], 16, GREEDY)[0]
    finally:
        e.stop()


@pytest.mark.skipif(not os.environ.get("LLMCYCLE_COMPILE_TESTS"), reason="compiles for ~1 min on 2 CPU cores: "
                    "set LLMCYCLE_COMPILE_TESTS=1 to run it")
def test_compiled_step_serves_the_batch_with_the_eager_tokens(model):
    """--compile: the batch decodes through `compiled_step` (batch sizes and cache views vary without a
    recompile per shape) and gives the eager engine's tokens."""
    import copy

    from torch._dynamo.utils import counters

    eager = Engine(model, max_batch=4, max_len=128)
    eager.start()
    want = [run_alone(eager, p, 70) for p in PROMPTS]
    eager.stop()
    e = Engine(copy.deepcopy(model), max_batch=4, max_len=128, compile=True)
    e.start()
    try:
        cs = [Collect(p, 70) for p in PROMPTS]
        for i in range(len(cs) - 1):  # joins at different steps: batch sizes 1..4, views of 64 and 128 columns
            nxt = cs[i + 1]
            cs[i].on_token = lambda n, nxt=nxt: e.submit([nxt.req]) if n == 3 else None
        e.submit([cs[0].req])
        assert [c.wait(600) for c in cs] == want
        assert counters["stats"]["unique_graphs"] <= 2  # batch 1 and batch > 1; nothing per length or view
    finally:
        e.stop()
