"""The generation flags shared by generate, chat and eval: generated once from SamplingConfig /
GenerationConfig, one set of defaults (greedy), and importable without torch."""

import argparse
import subprocess
import sys

import pytest

from llmcycle.evaluation.cli import add_arguments as add_eval_arguments
from llmcycle.inference.cli import (add_chat_arguments, add_generate_arguments, add_generation_arguments,
                                    generation_config, sampling_config)
from llmcycle.inference.config import GenerationConfig, SamplingConfig


def _parse(argv, add=add_generation_arguments):
    p = argparse.ArgumentParser()
    add(p)
    return p.parse_args(argv)


def test_no_flags_give_the_one_set_of_defaults():
    gen = generation_config(_parse([]))
    assert gen == GenerationConfig() and gen.sampling == SamplingConfig()
    assert gen.sampling.temperature == 0.0 and gen.sampling.describe() == "greedy"
    assert (gen.max_new_tokens, gen.seed, gen.sampling.top_k, gen.sampling.top_p) == (128, None, None, None)


def test_given_flags_reach_the_config():
    args = _parse(["--temperature", "0.7", "--top-k", "40", "--top-p", "0.9", "--max-new-tokens", "9", "--seed", "3",
                   "--stop", "\n", "--stop", "Q:", "--no-cache", "--num-samples", "2", "--truncate", "left"])
    gen = generation_config(args)
    assert gen.sampling == SamplingConfig(0.7, top_k=40, top_p=0.9)
    assert (gen.max_new_tokens, gen.seed, gen.stop, gen.use_cache, gen.num_samples, gen.truncate) == \
        (9, 3, ["\n", "Q:"], False, 2, "left")
    assert generation_config(_parse(["--no-use-cache"])).use_cache is False
    assert generation_config(_parse(["--compile"])).compile is True


@pytest.mark.parametrize("argv", [["--truncate", "middle"], ["--temperature", "-1"], ["--top-p", "0"],
                                  ["--compile", "--no-cache"], ["--max-new-tokens", "0"]])
def test_bad_generation_flags_are_clear_errors(argv):
    with pytest.raises(ValueError):
        generation_config(_parse(argv))


def test_generate_chat_and_eval_share_the_sampling_defaults():
    gen = _parse(["--run", "r", "hi"], add_generate_arguments)
    chat = _parse(["--run", "r"], add_chat_arguments)
    ev = _parse(["--run", "r", "--task", "sst2"], add_eval_arguments)
    assert sampling_config(gen) == sampling_config(chat) == sampling_config(ev) == SamplingConfig()
    assert sampling_config(_parse(["--run", "r", "--temperature", "1.5"], add_eval_arguments)).temperature == 1.5
    assert ev.seed == 0 and ev.max_new_tokens is None  # eval's own: exemplar seed, the task's answer length


def test_settings_modules_and_verb_definitions_do_not_import_torch():
    code = ("import sys, llmcycle.inference, llmcycle.inference.config, llmcycle.inference.cli, "
            "llmcycle.evaluation.cli, llmcycle.evaluation.interface; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def _imports(path) -> list[tuple[str, list[str]]]:
    """(llmcycle module, names) of every import in `path`, function-local ones included."""
    import ast

    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmcycle."):
            out.append((node.module, [a.name for a in node.names]))
    return out


def test_inference_and_evaluation_have_no_import_cycles_nor_private_imports():
    from pathlib import Path

    import llmcycle

    src = Path(llmcycle.__file__).parent
    graph = {}
    for pkg in ("inference", "evaluation"):
        for p in (src / pkg).glob("*.py"):
            mod = f"llmcycle.{pkg}.{p.stem}"
            deps = _imports(p)
            private = [(m, n) for m, names in deps for n in names if n.startswith("_")]
            assert not private, f"{mod} imports private names {private}"
            graph[mod] = {m for m, _ in deps if m.startswith(("llmcycle.inference.", "llmcycle.evaluation."))}
    done: set = set()

    def visit(mod: str, stack: tuple) -> None:
        assert mod not in stack, f"import cycle: {' -> '.join(stack + (mod,))}"
        if mod not in done:
            for dep in sorted(graph.get(mod, ())):
                visit(dep, stack + (mod,))
            done.add(mod)

    for mod in sorted(graph):
        visit(mod, ())
    assert "llmcycle.inference.generate" not in graph["llmcycle.inference.seq2seq"]
    assert "llmcycle.evaluation.adapters" not in graph["llmcycle.evaluation.hf_adapters"]
