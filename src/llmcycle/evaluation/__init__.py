"""In-context-learning evaluation: tasks, prompts, metrics, model adapters, runs and reports.

    tasks.py     declarative Task definitions (JSON-able), data loading, the shipped tasks
    prompts.py   zero/one/k-shot prompts: seeded exemplars never including the item, context fitting
    metrics.py   ROUGE (rouge-score), accuracy, GSM8K final-number exact match, distinct-n
    adapters.py  llmcycle decoder / encoder / seq2seq and Hugging Face causal / seq2seq models
    icl.py       a task at several shot counts and generation settings, per-example records
    report.py    the table (one column per shot count), side-by-side view, eval/<task>.json
    cli.py       `llmcycle eval`

Import from the submodules (`from llmcycle.evaluation.icl import evaluate`): the package itself
stays light so `llmcycle --help` and `llmcycle plan` do not load torch.
"""
