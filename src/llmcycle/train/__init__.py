"""Pretraining: one loop for 1 and N processes (`loop.py`), AdamW and its schedule (`optim.py`),
atomic resumable checkpoints (`checkpoint.py`), parallel wrapping (`parallel.py`)."""
