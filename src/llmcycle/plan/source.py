"""Where the model comes from: a preset, a Hugging Face config.json, a run directory, llmcycle's
own `ModelConfig`, raw dimensions, or just a parameter count.

`resolve()` returns a `ModelInfo`: the shape (None for a bare parameter count), the parameter
groups, and whether they are exact (our models, counted on the meta device by
`models/accounting.py`, the only place torch is imported) or analytic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmcycle import rundir
from llmcycle.plan import shape as shapes
from llmcycle.plan.presets import get_preset


@dataclass
class ModelInfo:
    name: str
    source: str  # preset | hf-config | run | config | dims | params
    shape: shapes.ModelShape | None
    params: dict  # groups + 'total'
    exact: bool  # counted from the built model
    train_seq_len: int | None = None  # a run directory's training sequence length (the default --seq-len)

    @property
    def n_params(self) -> float:
        return self.params["total"]

    @property
    def family(self) -> str:
        return self.shape.family if self.shape else "decoder"


def count_exact(cfg) -> dict:
    """Parameters of llmcycle's model for `cfg`, counted on the meta device (any family that
    `build_model` knows); groups as `models/accounting.py` names them, plus 'other' = 0."""
    from llmcycle.models.accounting import count_params  # torch only here: the rest of the planner is torch-free

    groups = dict(count_params(cfg))
    groups.setdefault("other", 0)
    return groups


def from_model_config(cfg, name: str = "llmcycle") -> ModelInfo:
    shape = shapes.from_config(cfg)
    try:
        return ModelInfo(name, "config", shape, count_exact(cfg), True)
    except ValueError:  # family not built yet: fall back to the analytic count
        return ModelInfo(name, "config", shape, shapes.param_groups(shape), False)


def from_run_dir(run: str | Path) -> ModelInfo:
    rc = rundir.load_config(run)
    info = from_model_config(rc.model, name=Path(run).name)
    info.source, info.train_seq_len = "run", rc.train.seq_len
    return info


def resolve(preset: str | None = None, hf_config: str | None = None, run: str | None = None, config=None,
            params: float | None = None, dims: dict | None = None) -> ModelInfo:
    """Exactly one model source; raises ValueError naming the choices otherwise."""
    given = [k for k, v in dict(preset=preset, hf_config=hf_config, run=run, config=config, params=params,
                                dims=dims or None).items() if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one model: --preset NAME, --hf-config PATH, --run DIR, --params N, "
                         f"or raw dims (--layers --d-model --heads --vocab); got {given or 'none'}")
    if preset:
        sh = get_preset(preset).shape
        return ModelInfo(sh.name, "preset", sh, shapes.param_groups(sh), False)
    if hf_config:
        sh = shapes.from_hf_config(hf_config)
        return ModelInfo(sh.name, "hf-config", sh, shapes.param_groups(sh), False)
    if run:
        return from_run_dir(run)
    if config is not None:
        return from_model_config(config)
    if params is not None:
        if params <= 0:
            raise ValueError(f"--params must be > 0, got {params}")
        return ModelInfo(f"{params:.3g} params", "params", None, {"total": params}, False)
    sh = shapes.from_dims(**dims)
    return ModelInfo(sh.name or "custom", "dims", sh, shapes.param_groups(sh), False)
