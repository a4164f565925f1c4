"""`llmcycle serve` against real clients: the official `openai` package on a live loopback server
(completions, chat with a template, streaming, usage, logprobs, echo, seeds, errors), the error
shape and status of each user mistake, health, metrics and the API key. A tiny random decoder
with a ChatML template, made here, stands in for a real model."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from conftest import tiny_model
from llmcycle.config import RunConfig, TrainConfig
from llmcycle.data.tokenizer import Tokenizer, byte_tokenizer
from llmcycle.models import build_model
from llmcycle.rundir import WEIGHTS, checkpoints_dir, config_path

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
    (root / "chat_template.jinja").write_text(CHATML)
    (root / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True}))
    (root / "generation_config.json").write_text(json.dumps({"eos_token_id": [tok.eos_id,
                                                                              tok.token_to_id("<|im_end|>")]}))
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
    srv = serve(make_run(tmp_path_factory.mktemp("serve_run")))
    srv.wait_ready()
    yield srv
    srv.close()
