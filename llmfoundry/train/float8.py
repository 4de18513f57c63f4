"""precision: amp_fp8: float8 matmuls in the model's large Linear layers (torchao's Float8Linear), bf16 autocast for
the rest of the model, as llm-foundry's amp_fp8 does with TransformerEngine.

Which nn.Linear layers become Float8Linear (`float8_targets`), and why:
  - not the LM head (the model's output embeddings, or any Linear sharing its weight with an embedding): the
    logits feed the softmax and the loss directly, so their quantisation error is the loss's; the vocabulary is
    often not a multiple of 16; and `loss_fn: fused_crossentropy` reads the head's weight in chunks outside the
    module's forward. Embeddings are lookups, not matmuls, and stay as they are.
  - only layers whose in_features and out_features are both divisible by 16: the float8 matmul (`_scaled_mm`)
    needs it.
  - only layers whose in_features and out_features are both at least fp8_config.min_features (default 2048):
    dynamic scaling reads every input, weight and gradient once more to find its amax and cast it, work that grows
    with the operands while the matmul grows with their product; below ~2k features per side those casts cost
    about what float8 saves (torchao's own shape heuristics, from H100 benchmarks, skip layers of 1-4k). For
    MPT-1B (d_model 2048) and larger every Linear in the blocks qualifies; MPT-125M (d_model 768) keeps none.

Conversion happens on the built model, before activation checkpointing, torch.compile and fully_shard
(train/setup.py), so each of them sees the Float8Linear layers; parameter names (the state dict's keys) are those
of amp_bf16. With `enable_fsdp_float8_all_gather` FSDP2 gathers the weights already cast to float8;
`precompute_float8_dynamic_scale_for_fsdp` then computes all their scales in one all-reduce after each optimizer
step (`after_optimizer_step`). Use compile_config with amp_fp8: torch.compile fuses
the amax and cast kernels into their neighbours; eager float8 is usually no faster than amp_bf16.

torchao is imported only when a run converts its model: importing this module does not import it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from llmfoundry.config.schema import FP8Config, TrainConfig

log = logging.getLogger(__name__)

FP8_MATMUL_MULTIPLE = 16  # _scaled_mm needs both matmul sizes of the weight divisible by this
MIN_CAPABILITY = (8, 9)  # float8 tensor cores: Ada (8.9), Hopper (9.0) and newer


def float8_hardware_problem(device: torch.device) -> str | None:
    """Why `device` cannot train with float8 matmuls, or None when it can (a CUDA GPU of compute capability 8.9+)."""
    if device.type != 'cuda':
        return f'this run trains on {device.type}' + ('' if torch.cuda.is_available() else ' (no CUDA GPU here)')
    capability = torch.cuda.get_device_capability(device)
    if tuple(capability) < MIN_CAPABILITY:
        return f'{torch.cuda.get_device_name(device)} has compute capability {capability[0]}.{capability[1]}'
    return None


def _head_weights(model: nn.Module) -> set[int]:
    """ids of the output head's weight and of every embedding weight (a Linear tied to one is a head)."""
    weights = {id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)}
    get_head = getattr(model, 'get_output_embeddings', None)
    head = get_head() if callable(get_head) else None
    if head is not None:
        weights.add(id(head.weight))
    return weights


def float8_targets(model: nn.Module, min_features: int) -> list[str]:
    """Names of the nn.Linear modules of `model` that amp_fp8 converts to Float8Linear (see the module doc)."""
    heads = _head_weights(model)
    targets = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or id(module.weight) in heads:
            continue
        sizes = (module.in_features, module.out_features)
        if all(size % FP8_MATMUL_MULTIPLE == 0 and size >= min_features for size in sizes):
            targets.append(name)
    return targets


def float8_linear_config(fp8: FP8Config) -> Any:
    """torchao's Float8LinearConfig for `fp8` (its recipe, the float8 all-gather, TransformerEngine's fp8_format)."""
    from torchao.float8 import CastConfig, Float8LinearConfig

    config = Float8LinearConfig.from_recipe_name(fp8.recipe)
    if fp8.fp8_format == 'E4M3' and fp8.recipe == 'tensorwise':  # the recipe's gradients are e5m2 (HYBRID)
        e4m3 = config.cast_config_input.target_dtype
        config = dataclasses.replace(
            config, cast_config_grad_output=CastConfig(target_dtype=e4m3), cast_config_grad_output_for_grad_weight=None
        )
    return dataclasses.replace(config, enable_fsdp_float8_all_gather=fp8.enable_fsdp_float8_all_gather)


def convert_model(model: nn.Module, config: TrainConfig) -> list[str]:
    """Under precision: amp_fp8, swap `model`'s `float8_targets` for Float8Linear in place (before it is
    parallelised); the names converted ([] under any other precision)."""
    if config.precision != 'amp_fp8':
        return []
    fp8 = config.fp8_config or FP8Config()
    for key in ('amax_history_len', 'amax_compute_algo'):
        if getattr(fp8, key) is not None:
            log.warning(
                'fp8_config.%s has no effect: torchao scales each tensor from its current amax '
                "(TransformerEngine's delayed scaling has no equivalent here).",
                key,
            )
    from torchao.float8 import convert_to_float8_training

    targets = set(float8_targets(model, fp8.min_features))
    convert_to_float8_training(
        model, module_filter_fn=lambda _, name: name in targets, config=float8_linear_config(fp8)
    )
    linears = sum(isinstance(module, nn.Linear) for module in model.modules())
    log.info(
        'amp_fp8: %d of %d Linear layers run in float8 (recipe %s, min_features %d); the rest in bf16.',
        len(targets),
        linears,
        fp8.recipe,
        fp8.min_features,
    )
    if not targets:
        log.warning(
            'amp_fp8: no Linear layer has both sizes >= fp8_config.min_features=%d and divisible by 16: '
            'the run is plain amp_bf16.',
            fp8.min_features,
        )
    if config.compile_config is None:
        log.warning(
            'amp_fp8 without compile_config: the float8 casts run as separate eager kernels and are usually '
            'slower than amp_bf16; add compile_config: {} (torch.compile fuses them).'
        )
    return sorted(targets)


def after_optimizer_step(config: TrainConfig, model: nn.Module) -> None:
    """fp8_config.precompute_float8_dynamic_scale_for_fsdp: every float8-gathered weight's scale for the next
    forward, in one all-reduce (call on every rank after each optimizer step)."""
    if config.fp8_config is None or not config.fp8_config.precompute_float8_dynamic_scale_for_fsdp:
        return
    from torchao.float8 import precompute_float8_dynamic_scale_for_fsdp

    precompute_float8_dynamic_scale_for_fsdp(model)
