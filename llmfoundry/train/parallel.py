"""Data parallelism for every run (`parallelize`): DDP without `fsdp_config`, PyTorch's FSDP2 (`fully_shard` over a
DeviceMesh) with it; one process needs neither.

Without fsdp_config: the model is placed on the device (a meta-built one initialised there, `materialise`),
torch.compile'd per block, and wrapped in DistributedDataParallel over a 1-D ('replicate',) mesh of all ranks.
With fsdp_config (`parallelize`): activation checkpointing / offloading per block -> torch.compile per block ->
`fully_shard` per block -> `fully_shard` on the root. The blocks are the model's decoder layers (`find_blocks`: MPT's,
or any transformers model's `_no_split_modules` list). A model built on the meta device is then allocated and
initialised shard by shard (`materialise`; transformers models in hf_init.py), so no rank ever holds the full
weights and the initial values do not depend on the world size or the sharding.

sharding_strategy -> mesh and `reshard_after_forward` (blocks; the root keeps its parameters unsharded after
forward, since the tied embedding / head is needed again as soon as backward starts):
  FULL_SHARD     1-D mesh ('shard',) over all ranks; reshard after forward (parameters gathered twice per step).
  SHARD_GRAD_OP  1-D mesh ('shard',) over all ranks; parameters stay gathered from forward until backward.
  HYBRID_SHARD   2-D mesh ('replicate', 'shard') of data_parallel_replicate_degree x data_parallel_shard_degree
                 (-1 fills the rest of the world; with neither set, shard within a node: LOCAL_WORLD_SIZE);
                 reshard after forward.
  NO_SHARD       DDP, written as HSDP with a shard group of one rank: 2-D mesh (world, 1). Every rank keeps full
                 parameters and gradients are all-reduced. FSDP2 is used here too (rather than DistributedDataParallel)
                 so that every strategy has the same interface: DTensor parameters, `set_requires_gradient_sync`,
                 the same mixed-precision policy and the same checkpoint code.

mixed_precision -> `MixedPrecisionPolicy`, where `low` is the trainer's precision (amp_bf16 and amp_fp8: bfloat16,
amp_fp16: float16, fp32: float32; so with precision fp32 every setting computes in fp32). Sharded (master) parameters
and optimizer state are always float32.
  PURE     param_dtype=low,  reduce_dtype=low      (compute and gradient reduction in low precision)
  DEFAULT  param_dtype=low,  reduce_dtype=float32  (compute in low precision, gradients reduced in fp32)
  FULL     param_dtype=fp32, reduce_dtype=float32  (no mixed precision in FSDP; autocast may still apply)
  dict     {param_dtype, reduce_dtype, output_dtype, cast_forward_inputs} taken as given (dtypes as 'bf16',
           'bfloat16', 'fp16', 'float16', 'fp32', 'float32'); llm-foundry's buffer_dtype and
           keep_low_precision_grads have no FSDP2 equivalent and are ignored with a warning.

FSDP1 knobs: forward_prefetch: true -> each block prefetches the next block's all-gather in forward
(`set_modules_to_forward_prefetch`); under device_train_microbatch_size: auto the trainer turns forward and
backward prefetch off, so an out-of-memory error on one rank cannot leave another in a prefetched all-gather
(train/microbatch.py). limit_all_gathers, backward_prefetch, use_orig_params and sync_module_states
have no FSDP2 equivalent (FSDP2 bounds in-flight all-gathers itself, prefetches one block in backward, always
exposes the original parameters, and every rank initialises identically): a non-default value logs one warning
each. state_dict_type is read by the checkpoint code, not here. cpu_offload -> `CPUOffloadPolicy` (parameters,
gradients and the optimizer step live on the CPU).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    ActivationWrapper,
    CheckpointImpl,
    checkpoint_wrapper,
    offload_wrapper,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.parallel import DistributedDataParallel

from llmfoundry.config.schema import FSDPConfig
from llmfoundry.config.validation import ConfigError, check_keys
from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.models.mpt.param_init import initial_value
from llmfoundry.models.peft_adapter import base_name

from .hf_init import init_adapter_shards, materialise_hf, original_class, unwrapped_name

log = logging.getLogger(__name__)

STRATEGIES = ('FULL_SHARD', 'SHARD_GRAD_OP', 'HYBRID_SHARD', 'NO_SHARD')
RESHARD_AFTER_FORWARD = {'FULL_SHARD': True, 'SHARD_GRAD_OP': False, 'HYBRID_SHARD': True, 'NO_SHARD': False}
DTYPES = {'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16, 'fp16': torch.float16, 'float16': torch.float16,
          'fp32': torch.float32, 'float32': torch.float32}
# precision -> autocast dtype (amp_fp8: the converted linears run in float8, see float8.py, the rest in bf16)
AUTOCAST_DTYPE = {'amp_bf16': torch.bfloat16, 'amp_fp16': torch.float16, 'amp_fp8': torch.bfloat16}
LOW_PRECISION = {**AUTOCAST_DTYPE, 'fp32': torch.float32}
MIXED_PRECISION_DICT_KEYS = ('param_dtype', 'reduce_dtype', 'output_dtype', 'cast_forward_inputs', 'buffer_dtype',
                             'keep_low_precision_grads')
# FSDP1 knob -> (its default, why a different value does nothing on FSDP2)
FSDP1_ONLY_KNOBS = {
    'limit_all_gathers': (True, 'FSDP2 bounds in-flight all-gathers itself'),
    'backward_prefetch': ('BACKWARD_PRE', 'FSDP2 always prefetches the next block in backward'),
    'use_orig_params': (True, 'FSDP2 always exposes the original parameters (as DTensors)'),
    'sync_module_states': (False, 'every rank initialises the same weights deterministically'),
}


# ----- mesh ----------------------------------------------------------------------------------------------------
def sharding_strategy(fsdp: FSDPConfig) -> str:
    """fsdp_config.sharding_strategy, upper-cased and checked."""
    strategy = str(fsdp.sharding_strategy).upper()
    if strategy not in STRATEGIES:
        raise ConfigError(f'fsdp_config.sharding_strategy={fsdp.sharding_strategy!r} is invalid; '
                          f'allowed: {", ".join(STRATEGIES)}.')
    return strategy


def _hybrid_degrees(fsdp: FSDPConfig, world_size: int) -> tuple[int, int]:
    """(replicate, shard) for HYBRID_SHARD; -1 (or an unset replicate degree) fills the rest of the world."""
    replicate = fsdp.data_parallel_replicate_degree
    shard = fsdp.data_parallel_shard_degree
    if replicate is None and shard == -1:  # FSDP1's HYBRID_SHARD: shard within a node, replicate across nodes
        shard = int(os.environ.get('LOCAL_WORLD_SIZE', world_size))
    replicate = -1 if replicate is None else replicate
    for key, value in (('data_parallel_replicate_degree', replicate), ('data_parallel_shard_degree', shard)):
        if value == 0 or value < -1:
            raise ConfigError(f'fsdp_config.{key}={value} is invalid: use a positive number of ranks or -1 (fill).')
    if replicate == -1 and shard == -1:
        raise ConfigError('fsdp_config: data_parallel_replicate_degree and data_parallel_shard_degree cannot both '
                          f'be -1; set one of them (their product must be the world size, {world_size}).')
    if replicate == -1:
        replicate = world_size // shard if world_size % shard == 0 else -1
    elif shard == -1:
        shard = world_size // replicate if world_size % replicate == 0 else -1
    if replicate * shard != world_size:
        raise ConfigError(
            f'fsdp_config: data_parallel_replicate_degree x data_parallel_shard_degree must equal the world size '
            f'({world_size}); got {fsdp.data_parallel_replicate_degree} x {fsdp.data_parallel_shard_degree}. '
            f'Set data_parallel_shard_degree to a divisor of {world_size} and data_parallel_replicate_degree to '
            f'-1 (or to {world_size} / shard degree).')
    return replicate, shard


def mesh_shape(fsdp: FSDPConfig | None, world_size: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The mesh's shape and dimension names for `fsdp.sharding_strategy` on `world_size` ranks (see module doc);
    without fsdp_config (DDP) every rank holds a replica."""
    if fsdp is None:
        return (world_size,), ('replicate',)
    strategy = sharding_strategy(fsdp)
    if strategy == 'HYBRID_SHARD':
        return _hybrid_degrees(fsdp, world_size), ('replicate', 'shard')
    if strategy == 'NO_SHARD':
        return (world_size, 1), ('replicate', 'shard')
    if fsdp.data_parallel_replicate_degree not in (None, 1) or fsdp.data_parallel_shard_degree not in (-1, world_size):
        raise ConfigError(
            f'fsdp_config: sharding_strategy {strategy} shards over all {world_size} ranks; '
            f'data_parallel_replicate_degree={fsdp.data_parallel_replicate_degree} and data_parallel_shard_degree='
            f'{fsdp.data_parallel_shard_degree} need sharding_strategy: HYBRID_SHARD (or remove them).')
    return (world_size,), ('shard',)


def build_mesh(fsdp: FSDPConfig | None, world_size: int, device_type: str) -> DeviceMesh:
    """The data-parallel DeviceMesh for `fsdp`, or DDP's when it is None (needs an initialised process group of
    `world_size` ranks)."""
    shape, names = mesh_shape(fsdp, world_size)
    return init_device_mesh(device_type, shape, mesh_dim_names=names)


# ----- mixed precision -----------------------------------------------------------------------------------------
def _dtype(value: Any, key: str) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if str(value).lower() not in DTYPES:
        raise ConfigError(f'fsdp_config.mixed_precision.{key}={value!r} is invalid; allowed: {", ".join(DTYPES)}.')
    return DTYPES[str(value).lower()]


def _policy_from_dict(setting: dict[str, Any]) -> MixedPrecisionPolicy:
    check_keys(setting, MIXED_PRECISION_DICT_KEYS, 'fsdp_config.mixed_precision')
    for key in ('buffer_dtype', 'keep_low_precision_grads'):
        if setting.get(key) is not None:
            log.warning('fsdp_config.mixed_precision.%s has no FSDP2 equivalent and is ignored (no-op).', key)
    return MixedPrecisionPolicy(
        param_dtype=_dtype(setting.get('param_dtype'), 'param_dtype'),
        reduce_dtype=_dtype(setting.get('reduce_dtype'), 'reduce_dtype'),
        output_dtype=_dtype(setting.get('output_dtype'), 'output_dtype'),
        cast_forward_inputs=bool(setting.get('cast_forward_inputs', True)),
    )


def mixed_precision_policy(setting: str | dict[str, Any], precision: str = 'amp_bf16') -> MixedPrecisionPolicy:
    """fsdp_config.mixed_precision (PURE / DEFAULT / FULL / dict) for the trainer's `precision` (see module doc)."""
    if isinstance(setting, dict):
        return _policy_from_dict(setting)
    if precision not in LOW_PRECISION:
        raise ConfigError(f'precision={precision!r} is invalid; allowed: {", ".join(LOW_PRECISION)}.')
    low = LOW_PRECISION[precision]
    policies = {
        'PURE': MixedPrecisionPolicy(param_dtype=low, reduce_dtype=low),
        'DEFAULT': MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32),
        'FULL': MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32),
    }
    if str(setting).upper() not in policies:
        raise ConfigError(f'fsdp_config.mixed_precision={setting!r} is invalid; allowed: PURE, DEFAULT, FULL or a '
                          'mapping {param_dtype, reduce_dtype, output_dtype, cast_forward_inputs}.')
    return policies[str(setting).upper()]


# ----- the recipe ----------------------------------------------------------------------------------------------
def _block_class(module: nn.Module) -> type[nn.Module]:
    """The class of a block as the model defines it: under checkpoint wrappers and FSDP's subclass."""
    while isinstance(module, ActivationWrapper):
        module = module._checkpoint_wrapped_module
    return original_class(module)


def find_blocks(model: nn.Module) -> nn.ModuleList | None:
    """The model's decoder layers: the nn.ModuleList of one class named in transformers' `_no_split_modules`
    (MPT's MPTBlock included), else the longest nn.ModuleList of modules of one class; None when there is none."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0
             and len({_block_class(block) for block in m}) == 1]
    no_split = set(getattr(model, '_no_split_modules', None) or ())
    named = [m for m in lists if _block_class(m[0]).__name__ in no_split]
    return max(named or lists, key=len, default=None)


def _blocks(model: nn.Module) -> nn.ModuleList:
    blocks = find_blocks(model)
    if blocks is None:
        raise ConfigError(f'fsdp_config needs a model made of repeated blocks (an nn.ModuleList of decoder layers); '
                          f'{type(model).__name__} has none.')
    return blocks


def warn_fsdp1_knobs(fsdp: FSDPConfig) -> None:
    """One warning line per FSDP1-only knob set to a non-default value: it does nothing on FSDP2."""
    for key, (default, why) in FSDP1_ONLY_KNOBS.items():
        value = getattr(fsdp, key)
        if value != default:
            log.warning('fsdp_config.%s=%r is a no-op on FSDP2 (%s).', key, value, why)


def apply_activation_checkpointing(blocks: nn.ModuleList, fsdp: FSDPConfig) -> None:
    """Wrap every n-th block (0, n, 2n, ...) to recompute activations in backward and/or keep them on the CPU."""
    if not (fsdp.activation_checkpointing or fsdp.activation_cpu_offload):
        return
    if fsdp.activation_checkpointing and fsdp.activation_checkpointing_reentrant:
        # Reentrant checkpointing runs the recomputation outside autograd's graph, which bypasses the hooks
        # FSDP2 uses to gather parameters and reduce gradients; non-reentrant saves the same memory.
        raise ConfigError('fsdp_config.activation_checkpointing_reentrant: true is not supported with FSDP2; '
                          'set it to false (non-reentrant checkpointing saves the same memory).')
    every = fsdp.activation_checkpointing_every_n_layers
    if not isinstance(every, int) or every < 1:
        raise ConfigError(f'fsdp_config.activation_checkpointing_every_n_layers={every!r} must be a positive integer.')
    for index in range(0, len(blocks), every):
        block = blocks[index]
        if fsdp.activation_checkpointing:
            block = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
        if fsdp.activation_cpu_offload:
            block = offload_wrapper(block)
        blocks[index] = block


def compile_blocks(model: nn.Module, compile_config: dict[str, Any] | None) -> None:
    """compile_config: torch.compile every block (`find_blocks`) in place (names unchanged; the blocks are identical,
    so one compilation is reused), or the whole model when it has no blocks."""
    if compile_config is None:
        return
    blocks = find_blocks(model)
    blocks = blocks if blocks is not None else [model]
    if any(isinstance(block, ActivationWrapper) for block in blocks):
        # A block fills the forward's shared attention-bias cache (a dict) on first use; dynamo refuses that side
        # effect inside a checkpointed region (a graph break per block) unless told the recomputation in
        # backward need not repeat it. Filling the cache is idempotent, so skipping it there is safe.
        torch._dynamo.config.skip_fwd_side_effects_in_bwd_under_checkpoint = True
    for block in blocks:
        block.compile(**compile_config)


def shard(model: nn.Module, blocks: nn.ModuleList, fsdp: FSDPConfig, mesh: DeviceMesh, precision: str) -> None:
    """fully_shard each block (one all-gather / reduce-scatter group per block), then the root for the rest."""
    strategy = sharding_strategy(fsdp)
    options: dict[str, Any] = {
        'mesh': mesh,
        'mp_policy': mixed_precision_policy(fsdp.mixed_precision, precision),
        'offload_policy': CPUOffloadPolicy() if fsdp.cpu_offload else OffloadPolicy(),
    }
    for block in blocks:
        fully_shard(block, reshard_after_forward=RESHARD_AFTER_FORWARD[strategy], **options)
    fully_shard(model, reshard_after_forward=False, **options)
    if fsdp.forward_prefetch:
        for block, following in zip(blocks, list(blocks)[1:]):
            block.set_modules_to_forward_prefetch([following])


def parallelize(
    model: nn.Module,
    fsdp: FSDPConfig | None,
    mesh: DeviceMesh | None,
    compile_config: dict[str, Any] | None = None,
    precision: str = 'amp_bf16',
    device: torch.device | str = 'cpu',
) -> nn.Module:
    """Place `model` on `device`, apply `fsdp` (or DDP without it) and compile_config, in place; returns the module
    to train through: `model` itself, or its DDP wrapper. `mesh` None (one process) only places, checkpoints and
    compiles. `precision` is the trainer's (it picks the low dtype of mixed_precision). A model built on the meta
    device is initialised here, after sharding (see module doc)."""
    if fsdp is None:
        materialise(model, device)
        compile_blocks(model, compile_config)
        if mesh is None:
            return model
        device = torch.device(device)
        # Gradients live in DDP's buckets (no copy into them before the all-reduce and back after it).
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None,
                                       device_mesh=mesh, gradient_as_bucket_view=True)
    # With cpu_offload the sharded parameters live on the CPU.
    home = torch.device('cpu') if fsdp.cpu_offload else torch.device(device)
    on_meta = any(p.is_meta for p in model.parameters())
    if not on_meta:
        model.to(home)
    blocks = _blocks(model)
    warn_fsdp1_knobs(fsdp)
    # 1. Checkpointing first, so compile and FSDP see the wrapped block: the recomputation then runs inside the
    #    block's FSDP unit (its parameters are gathered again for it) and inside the compiled graph.
    apply_activation_checkpointing(blocks, fsdp)
    # 2. Compile before sharding: the graph is the block's computation; dynamo leaves the FSDP2 hooks added next
    #    to run eagerly around it (torch._dynamo.config.skip_fsdp_hooks), so one graph serves every block.
    compile_blocks(model, compile_config)
    # 3. Shard bottom-up: each block's parameters form one group, the root takes what is left (embeddings, norm).
    if mesh is not None:
        shard(model, blocks, fsdp, mesh, precision)
    if on_meta:
        materialise(model, home)
    return model


# ----- meta-device initialisation ------------------------------------------------------------------------------
def local_part(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """This rank's part of `full` for `param` (its local shard when a DTensor); no communication."""
    if not isinstance(param, DTensor):
        return full
    return distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None).to_local()


def materialise(model: nn.Module, device: torch.device | str, base_seed: int | None = None) -> nn.Module:
    """Move `model` to `device`; a meta-built (possibly sharded) model is allocated there instead and every
    parameter gets its initial value, only the local shard of it kept: MPT's deterministic per-parameter init
    (`base_seed`, default the model's init_seed), or for a transformers model its pretrained weights or
    `_init_weights` (hf_init.py). The weights equal a single-process build and no rank holds the full model; under
    LoRA the base weights are those of the model without the adapter and the adapter starts from peft's init."""
    if not any(p.is_meta for p in model.parameters()):
        return model.to(device)
    if isinstance(model, MPTForCausalLM):
        return _materialise_mpt(model, device, base_seed)
    materialise_hf(model, device, find_blocks(model))
    return model


@torch.no_grad()
def _materialise_mpt(model: MPTForCausalLM, device: torch.device | str, base_seed: int | None) -> MPTForCausalLM:
    """The full value of each parameter is computed one parameter at a time and only the local shard is kept."""
    seed = model.init_seed if base_seed is None else base_seed
    model.to_empty(device=device)
    seen = init_adapter_shards(model, seed)  # LoRA: B = 0, so training starts from the base model
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen:  # a tied weight is initialised once, under its first owner (wte)
                continue
            seen.add(id(param))
            name = unwrapped_name(f'{module_name}.{param_name}' if module_name else param_name)
            # a base weight under LoRA starts as it would without the adapter
            full = initial_value(module, param_name, base_name(name), model.config, seed)
            local = param.to_local() if isinstance(param, DTensor) else param
            local.copy_(local_part(full.to(device=local.device, dtype=local.dtype), param))
    return model

