"""llmcycle: a workbench for the life of a language model (plan, prepare, pretrain, generate, evaluate)."""

__version__ = "0.1.0"
