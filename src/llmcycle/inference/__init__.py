"""Generation: sampling (pure functions of logits), the KV cache, decoder and seq2seq decoding,
chat templates, fill-mask, weight-only quantization, and the generate / chat / fill-mask verbs."""
