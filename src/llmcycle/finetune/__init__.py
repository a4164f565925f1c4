"""Fine-tuning (full and LoRA SFT) of decoder runs: `llmcycle finetune`."""
