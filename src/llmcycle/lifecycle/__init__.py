"""The whole lifecycle in one command (`llmcycle run`): pipeline.py runs it, report.py writes its
report.md, families.py holds what differs per model family; cli.py is the verb."""
