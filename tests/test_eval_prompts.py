"""Evaluation tasks and prompts: golden rendering, seeded exemplars that never include the item,
context fitting, clear errors, and the shipped task definitions on the shared data."""

from __future__ import annotations

import json

import pytest

from llmcycle.evaluation.prompts import PromptBuilder
from llmcycle.evaluation.tasks import SHIPPED, Task, load_task


def qa_task(**kw) -> Task:
    base = dict(name="qa", kind="generate", metric="exact_match", data={"path": "items.jsonl"},
                instruction="Answer the question.", template="Q: {q}\nA:", answer=" {a}", separator="\n\n",
                references=["a"], stop=["\n"])
    return Task.from_dict({**base, **kw})


ITEMS = [{"q": f"what is {i} + {i}?", "a": str(2 * i)} for i in range(10)]


def test_golden_rendering_zero_one_two_shot():
    b = PromptBuilder(qa_task(), ITEMS, ITEMS, pool_is_items=True, seed=0)
    assert b.build(3, 0).text == "Answer the question.\n\nQ: what is 3 + 3?\nA:"
    two = b.draw(3, 2)
    one = b.build(3, 1)
    assert one.exemplars == two[:1]
    j = two[0]
    assert one.text == f"Answer the question.\n\nQ: what is {j} + {j}?\nA: {2 * j}\n\nQ: what is 3 + 3?\nA:"
    k0, k1 = two
    assert b.build(3, 2).text == (f"Answer the question.\n\nQ: what is {k0} + {k0}?\nA: {2 * k0}\n\n"
                                  f"Q: what is {k1} + {k1}?\nA: {2 * k1}\n\nQ: what is 3 + 3?\nA:")


def test_golden_rendering_choice_task_without_instruction():
    t = Task.from_dict(dict(name="s", kind="choice", metric="accuracy", data={"path": "x.jsonl"},
                            template="Review: {text}\nSentiment:", answer=" {choice}", separator="\n",
                            label_field="label", choices={"0": "negative", "1": "positive"}))
    items = [{"text": "bad", "label": "0"}, {"text": "good", "label": 1}]
    b = PromptBuilder(t, items, items, True, seed=0)
    assert b.build(0, 1).text == "Review: good\nSentiment: positive\nReview: bad\nSentiment:"
    assert t.continuations(items[0]) == [" negative", " positive"]
    assert t.gold(items[0]) == 0 and t.gold(items[1]) == 1  # int labels match their string keys


def test_exemplars_seeded_nested_and_never_the_item():
    b = PromptBuilder(qa_task(), ITEMS, ITEMS, True, seed=7)
    for i in range(len(ITEMS)):
        draw = b.draw(i, 5)
        assert i not in draw and len(set(draw)) == 5
        assert b.draw(i, 3) == draw[:3]  # nested: fewer shots = a prefix
    assert [b.draw(i, 4) for i in range(10)] == [PromptBuilder(qa_task(), ITEMS, ITEMS, True, 7).draw(i, 4)
                                                  for i in range(10)]
    assert any(b.draw(i, 4) != PromptBuilder(qa_task(), ITEMS, ITEMS, True, 8).draw(i, 4) for i in range(10))


def test_large_pool_rejection_path_excludes_item_and_duplicates():
    pool = [{"q": f"p{i}", "a": "1"} for i in range(2000)] + [{"q": "what is 0 + 0?", "a": "0"}]  # a copy of item 0
    b = PromptBuilder(qa_task(), ITEMS, pool, pool_is_items=False, seed=0)
    assert b.excluded(0) == {2000}
    for seed in range(30):
        b.seed = seed
        assert 2000 not in b.draw(0, 20) and b.draw(0, 5) == b.draw(0, 20)[:5]


def test_k_larger_than_pool_is_a_clear_error():
    b = PromptBuilder(qa_task(), ITEMS[:3], ITEMS[:3], True, seed=0)
    assert len(b.draw(0, 2)) == 2
    with pytest.raises(ValueError, match="3-shot prompts need 3 exemplars but the pool has only 2"):
        b.draw(0, 3)


def test_context_fitting_drops_exemplars_never_the_question():
    b = PromptBuilder(qa_task(), ITEMS, ITEMS, True, seed=0)
    full = b.build(5, 3, count_tokens=len)
    zero = b.build(5, 0, count_tokens=len)
    one = b.build(5, 1, count_tokens=len)
    p = b.build(5, 3, count_tokens=len, budget=one.tokens)  # room for exactly one exemplar
    assert (p.shots, p.used, p.text, p.overflow) == (3, 1, one.text, False)
    assert p.exemplars == full.exemplars[:1]
    assert p.text.endswith("Q: what is 5 + 5?\nA:")
    p = b.build(5, 3, count_tokens=len, budget=zero.tokens - 1)  # not even the question fits
    assert (p.used, p.overflow, p.text) == (0, True, zero.text)


def test_missing_fields_bad_definitions_and_empty_data(tmp_path):
    t = qa_task(template="Q: {question}\nA:")
    with pytest.raises(ValueError, match="needs field 'question'.*fields present: a, q"):
        t.question(ITEMS[0])
    with pytest.raises(ValueError, match="no field 'label'"):
        Task.from_dict(dict(name="c", kind="choice", metric="accuracy", data={"path": "x"}, template="{q}",
                            answer=" {choice}", label_field="label", choices={"0": "a", "1": "b"})).gold({"q": 1})
    with pytest.raises(ValueError, match="unknown task field"):
        Task.from_dict({"name": "x", "colour": "red"})
    with pytest.raises(ValueError, match="metric 'accuracy' does not fit a generate task"):
        qa_task(metric="accuracy")
    with pytest.raises(ValueError, match="needs 'references'"):
        qa_task(references=[])
    (tmp_path / "items.jsonl").write_text("")
    with pytest.raises(ValueError, match="evaluation data is empty"):
        qa_task(root=None).load(tmp_path)
    with pytest.raises(ValueError, match="not found"):
        qa_task(data={"path": "nope.jsonl"}).load(tmp_path)
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        load_task("nope")


def test_task_json_file_round_trip(tmp_path):
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ITEMS))
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(qa_task().to_dict()))
    t = load_task(path)
    assert t == qa_task()
    items, pool, same = t.load()  # relative paths resolve against the task file's folder
    assert items == ITEMS and same


def test_shipped_tasks_on_shared_data(shared_data):
    t = load_task("dialogsum")
    items, pool, same = t.load(shared_data)
    assert (len(items), len(pool), same) == (500, 500, False)
    assert len(t.reference_texts(items[0])) == 3 and t.reference_texts(items[0])[0].startswith("Ms. Dawson helps")
    assert pool[0]["fname"] == "dev_0"
    p = PromptBuilder(t, items, pool, same, seed=0).build(0, 1)
    assert p.text.startswith("Summarize each dialogue in one or two sentences.\n\nDialogue:\n#Person1#:")
    assert p.text.endswith("\nSummary:") and "\nSummary: " in p.text

    t = load_task("sst2")
    items, pool, _ = t.load(shared_data)
    assert (len(items), len(pool)) == (1821, 6920)
    assert {t.gold(r) for r in items} == {0, 1}
    assert t.question(items[0]).startswith("Review: ") and t.exemplar(items[0]).endswith(("negative", "positive"))

    t = load_task("agnews")
    items, pool, same = t.load(shared_data)
    assert len(items) == 7600 and same
    assert t.question(items[0]) == ("Article: Fears for T N pension after talks. Unions representing workers at "
                                    "Turner   Newall say they are 'disappointed' after talks with stricken parent "
                                    "firm Federal Mogul.\nTopic:")
    assert not any("\\" in r["description"] or " #39;" in r["description"] for r in items)
    assert [t.gold(r) for r in items[:3]] == [2, 3, 3]

    t = load_task("gsm8k")
    items, pool, _ = t.load(shared_data)
    assert (len(items), len(pool)) == (1319, 7473)
    assert t.reference_texts(items[0])[0].endswith("#### 18")


def test_every_shipped_task_is_valid():
    for name in SHIPPED:
        assert load_task(name).name == name
