"""`llmcycle serve` against real clients: the official `openai` package on a live loopback server
(completions, chat with a template, streaming, usage, logprobs, echo, seeds, errors), the error
shape and status of each user mistake, health, metrics and the API key. A tiny random decoder
with a ChatML template, made here, stands in for a real model."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from conftest import tiny_model
from llmcycle.config import RunConfig, TrainConfig
from llmcycle.data.tokenizer import Tokenizer, byte_tokenizer
from llmcycle.models import build_model
from llmcycle.rundir import WEIGHTS, checkpoints_dir, config_path, write_prompt_files

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

CHATML = ("{% for message in messages %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
KEY = "test-key"
CONTEXT = 96


def make_run(root, seed: int = 0):
    """A run directory with a random tiny decoder, a byte tokenizer plus ChatML tokens and a template."""
    from safetensors.torch import save_model

    hf = byte_tokenizer()._hf
    hf.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok = Tokenizer(hf, "byte")
    tok.save(root)
    write_prompt_files(root, {"add_bos_token": True}, {"eos_token_id": [tok.eos_id, tok.token_to_id("<|im_end|>")]},
                       CHATML)
    cfg = RunConfig(model=tiny_model(vocab_size=300, max_seq_len=CONTEXT), train=TrainConfig(seq_len=CONTEXT, max_steps=1))
    cfg.save(config_path(root))
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    (checkpoints_dir(root) / "step_0").mkdir(parents=True)
    save_model(model, str(checkpoints_dir(root) / "step_0" / WEIGHTS))
    return root


class LiveServer:
    """uvicorn on 127.0.0.1 with an OS-chosen port, in a thread."""

    def __init__(self, app) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.time() + 60
        while httpx.get(self.url + "/health").status_code != 200:
            assert time.time() < deadline, "model did not load"
            time.sleep(0.05)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(run, api_key=KEY, **kw):
    from llmcycle.serve.app import create_app
    from llmcycle.serve.cli import load_service

    kw = {"max_batch": 4, "warmup": False, **kw}
    return LiveServer(create_app(lambda m: load_service(run, "tiny", metrics=m, **kw), api_key))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("serve_run"))
    srv = serve(run)
    srv.run = run
    srv.wait_ready()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(live):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=live.url + "/v1", api_key=KEY, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def reference(live):
    """The same run loaded in-process, for the reference engine (`generate`)."""
    from llmcycle.inference.chat import prompt_style
    from llmcycle.rundir import load_model, load_tokenizer

    model, _ = load_model(live.run)
    tok = load_tokenizer(live.run)
    return model, tok, prompt_style(live.run, tok), live.server.config.app.state.llm["service"]


def metric(live, name: str) -> float:
    for line in httpx.get(live.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[1])
    raise KeyError(name)


def _greedy(model, tok, prompt, n, **kw):
    from llmcycle.inference.generate import GenerationConfig, generate
    from llmcycle.inference.sampling import SamplingConfig

    cfg = GenerationConfig(max_new_tokens=n, sampling=SamplingConfig(temperature=0), stop=kw.pop("stop", []))
    return generate(model, tok, [prompt], cfg, **kw)[0]


def test_models_lists_the_run(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_completion_equals_the_reference_engine_and_counts_usage(client, reference):
    model, tok, style, _ = reference
    out = client.completions.create(model="tiny", prompt="def f(x):", max_tokens=12, temperature=0)
    ref = _greedy(model, tok, "def f(x):", 12, add_bos=style.add_bos)
    assert out.choices[0].text == ref.text
    assert out.choices[0].finish_reason == ("length" if ref.finish_reason == "length" else "stop")
    assert out.usage.prompt_tokens == len(tok.encode("def f(x):", bos=True))
    assert out.usage.completion_tokens == 12 and out.usage.total_tokens == out.usage.prompt_tokens + 12


def test_streamed_completion_is_the_same_text_with_usage_last(client):
    whole = client.completions.create(model="tiny", prompt="import os\n", max_tokens=20, temperature=0)
    chunks = list(client.completions.create(model="tiny", prompt="import os\n", max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert len(chunks) > 3
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_uses_the_template_and_streams(client, reference):
    from llmcycle.inference.chat import chat_encoder, encode_chat, render

    model, tok, style, _ = reference
    messages = [{"role": "user", "content": "Say hi"}]
    out = client.chat.completions.create(model="tiny", messages=messages, max_tokens=15, temperature=0)
    ref = _greedy(model, tok, "Say hi", 15, stop=["<|im_end|>"], encode=chat_encoder(tok, style))
    assert out.choices[0].message.role == "assistant" and out.choices[0].message.content == ref.text
    assert out.usage.prompt_tokens == len(encode_chat(tok, render(style, messages), messages))
    stream = client.chat.completions.create(model="tiny", messages=messages, max_completion_tokens=15,
                                            temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ref.text


def test_stop_strings_seed_and_n(client):
    free = client.completions.create(model="tiny", prompt="abc", max_tokens=30, temperature=0).choices[0].text
    stop = free[5:7]
    cut = client.completions.create(model="tiny", prompt="abc", max_tokens=30, temperature=0, stop=[stop, "\x00"])
    assert cut.choices[0].text == free[:free.index(stop)] and cut.choices[0].finish_reason == "stop"
    kw = dict(model="tiny", prompt="abc", max_tokens=25, temperature=1.2, top_p=0.95, extra_body={"top_k": 50})
    a = client.completions.create(seed=7, n=2, **kw)
    b = client.completions.create(seed=7, n=2, **kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert a.choices[0].text != a.choices[1].text and [c.index for c in a.choices] == [0, 1]
    assert client.completions.create(seed=8, **kw).choices[0].text != a.choices[0].text


def test_echo_logprobs_are_the_models_prompt_log_probabilities(client, reference):
    model, tok, _, _ = reference
    out = client.completions.create(model="tiny", prompt="hello world", max_tokens=0, echo=True, logprobs=1)
    ids = tok.encode("hello world", bos=True)
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids]))[0][0], -1)
    want = [lp[t - 1, ids[t]].item() for t in range(1, len(ids))]
    got = out.choices[0].logprobs.token_logprobs
    assert out.choices[0].text == "hello world" and got[0] is None
    assert got[1:] == pytest.approx(want, abs=1e-4)
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=4,
                                          temperature=0, logprobs=True, top_logprobs=3)
    content = chat.choices[0].logprobs.content
    assert len(content) == 4 and all(len(c.top_logprobs) == 3 for c in content)
    assert all(c.logprob == pytest.approx(c.top_logprobs[0].logprob) for c in content)  # greedy = the top one


def _post(live, path, body=None, raw=None, key=KEY):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        return httpx.post(live.url + path, content=raw, headers={**headers, "Content-Type": "application/json"})
    return httpx.post(live.url + path, json=body, headers=headers)


@pytest.mark.parametrize("body,status,param,words", [
    ({"model": "tiny", "prompt": "x", "max_tokens": "5"}, 400, "max_tokens", "valid integer"),
    ({"model": "tiny", "prompt": "x", "temperature": "hot"}, 400, "temperature", "valid number"),
    ({"model": "tiny", "prompt": "x", "temperature": 3.0}, 400, "temperature", "[0, 2]"),
    ({"model": "gpt-4", "prompt": "x"}, 404, "model", "does not exist"),
    ({"model": "tiny", "prompt": "x" * 200}, 400, "prompt", f"maximum context length is {CONTEXT} tokens"),
    ({"model": "tiny", "prompt": "xyz", "max_tokens": 500}, 400, "max_tokens", "(4 in the prompt, 500 for the"),
    ({"model": "tiny", "prompt": "x", "n": 0}, 400, "n", "between 1"),
    ({"prompt": "x"}, 400, "model", "Field required"),
])
def test_mistakes_are_openai_errors_with_their_status(live, body, status, param, words):
    r = _post(live, "/v1/completions", body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param and words in err["message"]
    assert err["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_malformed_json_bad_chat_and_unknown_route(live):
    r = _post(live, "/v1/chat/completions", raw=b'{"model": "tiny", "messages": [')
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = _post(live, "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.role"
    r = httpx.get(live.url + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_api_key_is_required(live, client):
    import openai

    assert _post(live, "/v1/completions", {"model": "tiny", "prompt": "x"}, key=None).status_code == 401
    bad = openai.OpenAI(base_url=live.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.completions.create(model="tiny", prompt="x", max_tokens=2)
    assert e.value.status_code == 401 and "Incorrect API key" in str(e.value)
    assert httpx.get(live.url + "/health").status_code == 200  # health and metrics stay open


def test_metrics_count_requests_tokens_and_latency(live, client):
    client.completions.create(model="tiny", prompt="count me", max_tokens=5, temperature=0)
    text = httpx.get(live.url + "/metrics").text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['llmcycle_requests_total{endpoint="/v1/completions",status="200"}'] >= 1
    assert values["llmcycle_generation_tokens_total"] >= 5 and values["llmcycle_prompt_tokens_total"] >= 9
    assert values["llmcycle_time_to_first_token_seconds_count"] >= 1 and "llmcycle_queue_depth" in values
    assert values["llmcycle_tokens_per_second_count"] >= 1


def test_a_client_that_disconnects_mid_stream_frees_its_row(live):
    service = live.server.config.app.state.llm["service"]
    engine = service.engine
    engine.on_step = lambda B: time.sleep(0.02)  # slow the steps down so the stream outlives the read
    before = metric(live, "llmcycle_generation_tokens_total")
    try:
        body = {"model": "tiny", "prompt": "a", "max_tokens": 80, "temperature": 0, "stream": True, "ignore_eos": True}
        with httpx.stream("POST", live.url + "/v1/completions", json=body,
                          headers={"Authorization": f"Bearer {KEY}"}) as r:
            lines = r.iter_lines()
            while not next(lines).startswith("data:"):
                pass
            assert engine.running, "the request should be running"
        deadline = time.time() + 5
        while engine.running and time.time() < deadline:
            time.sleep(0.02)
        assert engine.running == []
        time.sleep(0.2)
        assert metric(live, "llmcycle_generation_tokens_total") - before < 60  # it left well before 80 tokens
    finally:
        engine.on_step = None


def test_health_is_503_while_loading_then_200(tmp_path):
    from llmcycle.serve.app import create_app

    release = threading.Event()

    def slow_load(metrics):
        release.wait(30)
        raise RuntimeError("no model here")

    srv = LiveServer(create_app(slow_load))
    try:
        r = httpx.get(srv.url + "/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = httpx.post(srv.url + "/v1/completions", json={"model": "x", "prompt": "y"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "loading"
        release.set()
        time.sleep(0.2)
        assert httpx.get(srv.url + "/health").json()["status"] == "error"
    finally:
        srv.close()


def test_a_full_queue_answers_503(tmp_path):
    srv = serve(make_run(tmp_path), api_key=None, max_batch=1, max_queue=1)
    srv.wait_ready()
    engine = srv.server.config.app.state.llm["service"].engine
    engine.on_step = lambda B: time.sleep(0.1)  # the first request runs for 8 s, the second waits
    try:
        body = {"model": "tiny", "prompt": "a", "max_tokens": 80, "stream": True, "ignore_eos": True}
        with httpx.stream("POST", srv.url + "/v1/completions", json=body) as first:
            lines = first.iter_lines()  # kept: dropping the iterator closes the connection (a disconnect)
            next(lines)  # running now
            second = threading.Thread(target=httpx.post, args=(srv.url + "/v1/completions",),
                                      kwargs={"json": {**body, "stream": False}, "timeout": 60}, daemon=True)
            second.start()
            deadline = time.time() + 10
            while engine.queue_depth() < 1:  # the second waits in the queue
                assert time.time() < deadline
                time.sleep(0.01)
            third = httpx.post(srv.url + "/v1/completions", json=body)
            assert third.status_code == 503 and third.json()["error"]["code"] == "queue_full"
            assert third.headers["retry-after"] == "1"
    finally:
        engine.on_step = None
        srv.close()


def test_text_stream_sends_whole_characters_and_holds_back_stop_prefixes():
    from llmcycle.serve.text import TextStream

    tok = byte_tokenizer()
    ids = tok.encode("née, then STOP here")
    s = TextStream(tok, ["STOP"])
    pieces = [s.push(t) for t in ids]
    assert "".join(pieces) == "née, then " and s.stopped and s.flush() == ""
    assert "\ufffd" not in "".join(pieces)  # é is two bytes: nothing is sent between them
    assert pieces[ids.index(tok.encode("S")[0])] == ""  # "S" could start "STOP": held back
    s = TextStream(tok, ["STOP"])
    pieces = [s.push(t) for t in tok.encode("a ST")]
    assert "".join(pieces) == "a " and s.flush() == "ST" and not s.stopped  # the end releases the held tail


def test_serve_command_flags_and_refusals(tmp_path, capsys):
    import argparse

    from llmcycle.cli import build_parser, main

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["serve"]
    flags = {o for a in sub._actions for o in a.option_strings}
    assert {"--run", "--host", "--port", "--api-key", "--quantize", "--compile", "--max-batch"} <= flags
    assert all(a.help for a in sub._actions if a.option_strings)
    assert sub.parse_args(["--run", "x"]).host == "127.0.0.1"  # loopback unless asked
    assert main(["serve", "--run", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    run = make_run(tmp_path / "enc")
    RunConfig(model=tiny_model(family="encoder", vocab_size=300, max_seq_len=CONTEXT),
              train=TrainConfig(seq_len=CONTEXT, max_steps=1)).save(config_path(run))
    assert main(["serve", "--run", str(run)]) == 2
    assert "decoder models" in capsys.readouterr().err
