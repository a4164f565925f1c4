"""`train --compile`: the training forward through `torch.compile`, its backward with it (AOTAutograd).

Inductor fuses the elementwise work around the matmuls (norms, GELU/SwiGLU, residual adds, the
loss's log-softmax) into a few generated C++ (CPU) or Triton (GPU) kernels, so fewer passes over
memory and fewer operator dispatches per step. Shapes are static (a training step always sees
micro_batch x seq_len); evaluation keeps the eager model. The first step pays the compilation
(tens of seconds on a CPU); on a CPU inductor needs a working C++ compiler.
"""

from __future__ import annotations

from typing import Callable

import torch


def compile_for_training(model: torch.nn.Module) -> Callable:
    """The compiled forward of `model` (same parameters); a missing compiler is a clear error."""
    compiled = torch.compile(model, dynamic=False)

    def forward(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except torch._dynamo.exc.BackendCompilerFailed as e:
            first = str(e).strip().splitlines()[0][:300]
            raise ValueError(f"--compile: torch.compile could not build the training step ({first}); on a CPU "
                             "inductor needs a working C++ compiler (g++): install one, or drop --compile") from e

    return forward
