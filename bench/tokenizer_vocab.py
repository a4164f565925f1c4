"""Pick the default BPE vocabulary size by measurement.

Trains byte-level BPE on ~2 MB (and on all) of the train split of the default corpus (the
stdlib source), then prints bytes per token on the held-out validation documents, the training
time, and what the vocabulary costs in embedding parameters at d_model=256 next to the
~3.1 M non-embedding parameters of the default 4-layer model (12 * n_layer * d^2).

    .venv/bin/python bench/tokenizer_vocab.py [--sample-mb 2] [--d-model 256] [--n-layer 4]
"""

from __future__ import annotations

import argparse
import time

from llmcycle.config import DataConfig
from llmcycle.data.corpus import CorpusStats, iter_documents, split_of
from llmcycle.data.tokenizer import byte_tokenizer, train_bpe

VOCABS = (1024, 2048, 4096, 8192)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample-mb", type=float, default=2.0, help="MB of train text for the small sample (default 2)")
    ap.add_argument("--d-model", type=int, default=256, help="width for the embedding cost (default 256)")
    ap.add_argument("--n-layer", type=int, default=4, help="blocks for the non-embedding size (default 4)")
    args = ap.parse_args()

    cfg = DataConfig()
    train, val = [], []
    for doc in iter_documents(cfg, CorpusStats()):
        (val if split_of(doc.sha256, cfg.seed, cfg.val_fraction) == "val" else train).append(doc.text)
    val_bytes = sum(len(t.encode("utf-8")) for t in val)
    sample, size = [], 0
    for text in train:
        if size >= args.sample_mb * 1e6:
            break
        sample.append(text)
        size += len(text.encode("utf-8"))
    full = sum(len(t.encode("utf-8")) for t in train)
    print(f"train sample {size / 1e6:.1f} MB, full train split {full / 1e6:.1f} MB, "
          f"held-out {len(val)} files {val_bytes / 1e6:.2f} MB")
    body = 12 * args.n_layer * args.d_model**2
    byte_tokens = sum(map(len, byte_tokenizer().encode_batch(val)))
    print(f"byte tokenizer: {val_bytes / byte_tokens:.2f} bytes/token")
    heads = ("vocab", "B/tok (sample)", "B/tok (full)", "train s (full)", "emb params", "emb/body")
    print("{:>6} {:>15} {:>13} {:>15} {:>11} {:>9}".format(*heads))
    for vocab in VOCABS:
        row = []
        for texts in (sample, train):
            t0 = time.perf_counter()
            tok = train_bpe(iter(texts), vocab)
            seconds = time.perf_counter() - t0
            row.append(val_bytes / sum(map(len, tok.encode_batch(val))))
        emb = tok.vocab_size * args.d_model
        print(f"{vocab:>6} {row[0]:>15.2f} {row[1]:>13.2f} {seconds:>15.1f} {emb / 1e6:>10.2f}M {emb / body:>9.2f}")


if __name__ == "__main__":
    main()
