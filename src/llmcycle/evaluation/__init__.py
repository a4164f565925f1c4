"""In-context-learning evaluation: tasks, prompts, metrics, model adapters, runs and reports.

    tasks.py     declarative Task definitions (JSON-able), the shipped tasks
    records.py   a task's data source: local files (jsonl/json/csv/tsv/label-text) or the hub
    prompts.py   zero/one/k-shot prompts: seeded exemplars never including the item, context fitting
    metrics.py   ROUGE (rouge-score), accuracy, GSM8K final-number exact match, distinct-n
    interface.py          the adapter interface every model is scored through; answer cutting (torch-free)
    scoring.py            batched continuation log-likelihood (one implementation for every adapter)
    llmcycle_adapters.py  llmcycle decoder / encoder / seq2seq runs
    hf_adapters.py        Hugging Face causal / seq2seq models
    adapters.py           load_adapter: the adapter for a run directory or a Hugging Face model
    icl.py       a task at several shot counts and generation settings, per-example records
    results.py   the table (one column per shot count), side-by-side view, the task's eval JSON
    cli.py       `llmcycle eval`

Import from the submodules (`from llmcycle.evaluation.icl import evaluate_task`): the package itself
stays light so `llmcycle --help` and `llmcycle plan` do not load torch.
"""
