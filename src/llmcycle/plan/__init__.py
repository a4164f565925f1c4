"""`llmcycle.plan`: memory, compute and scaling-law planning as pure functions a notebook can call.

    from llmcycle import plan
    info = plan.resolve(preset="gpt3-175b")                 # or hf_config=, run=, config=, params=, dims=
    plan.training_flops(info.n_params, 300e9)               # 6ND
    plan.model_state_bytes(7.5e9, "bf16", "adamw", "zero1", dp=64)
    plan.build_plan(info, plan.Settings(gpus=64, tokens=300e9))   # everything, JSON-ready

Modules: shape (ModelShape, analytic params; Hugging Face config.json keys are read by
llmcycle.hub.hf_config), presets, source (model input), memory, compute, hardware (GPU catalogue),
scaling, build (the plan dict), tables/plot (output), cli, measure (predicted vs measured on
llmcycle's own models). Nothing here imports torch at import time.
"""

from llmcycle.plan.compute import (PF_DAY, flops_from_gpu_hours, flops_per_token, kaplan_forward_flops_per_token,
                                   korthikanti_hardware_flops, korthikanti_model_flops, pf_days, run_cost, step_flops,
                                   training_flops)
from llmcycle.plan.hardware import GB, GIB, GPUS, get_gpu, gpu_for_device
from llmcycle.plan.memory import (activation_bytes, dtype_bytes, inference_memory, korthikanti_layer_bytes,
                                  kv_cache_bytes, layer_activation_bytes, model_state_bytes,
                                  model_state_bytes_per_param, smallest_dp, training_memory, weight_bytes)
from llmcycle.plan.presets import PRESETS, get_preset
from llmcycle.plan.build import Settings, build_plan
from llmcycle.plan.scaling import (CHINCHILLA, CHINCHILLA_PRINTED, EPOCH, MUENNIGHOFF, SARDANA, chinchilla_point_for_params,
                                   chinchilla_rule, data_constrained_loss, data_constrained_optimum, data_plan,
                                   effective_tokens, inference_optimum, kaplan_loss_c, kaplan_loss_d, kaplan_loss_n,
                                   kaplan_loss_nd, kaplan_optimum, optimum, params_for_tokens)
from llmcycle.plan.shape import (ModelShape, from_config, from_dims, from_hf_config, from_hf_dict, non_embedding_params,
                                 param_groups)
from llmcycle.plan.source import ModelInfo, resolve

__all__ = [n for n in dir() if not n.startswith("_")]
