"""How a config splits over N ranks, worked out without starting them: parallelism, precision and batching.

The trainer takes its batch sizes from here (`device_batch_sizes`); `--dry-run` prints the whole layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.validation import ConfigError

from .parallel import mesh_shape, mixed_precision_policy, sharding_strategy

AUTOCAST = {'fp32': 'fp32 (no autocast)', 'amp_bf16': 'amp_bf16 (autocast to bfloat16)',
            'amp_fp16': 'amp_fp16 (autocast to float16, with a gradient scaler)',
            'amp_fp8': 'amp_fp8 (float8 matmuls in the large Linear layers, autocast to bfloat16 elsewhere)'}


@dataclass(frozen=True)
class Layout:
    world_size: int
    parallelism: str
    precision: str
    global_batch: int
    device_batch: int
    microbatch: int | str  # 'auto' is decided when the run starts

    @property
    def accumulation(self) -> int | None:
        """Gradient accumulation steps (microbatches per optimizer step); None while the microbatch is 'auto'."""
        return None if self.microbatch == 'auto' else math.ceil(self.device_batch / self.microbatch)

    def describe(self) -> list[str]:
        ranks = f"{self.world_size} rank{'s' if self.world_size > 1 else ''}"
        if self.microbatch == 'auto':
            micro = (f'microbatch auto (starts at {self.device_batch}; every rank halves it and retries the batch when '
                     'any rank runs out of memory)')
        else:
            micro = f'microbatch {self.microbatch} -> {self.accumulation} gradient accumulation step' + (
                's' if self.accumulation != 1 else '')
        return [f'parallelism: {self.parallelism}', f'precision: {self.precision}',
                f'batch: global {self.global_batch} = {ranks} x {self.device_batch} per device; {micro}']


def device_batch_sizes(config: TrainConfig, world_size: int) -> tuple[int, int | str]:
    """(device train batch size, microbatch size or 'auto') on `world_size` ranks."""
    if config.global_train_batch_size is not None:
        if config.global_train_batch_size % world_size:
            raise ConfigError(
                f'global_train_batch_size={config.global_train_batch_size} is not divisible by the {world_size} '
                f'ranks; choose a multiple of {world_size}.'
            )
        device_batch = config.global_train_batch_size // world_size
        if config.device_train_batch_size not in (None, device_batch):
            raise ConfigError(f'device_train_batch_size={config.device_train_batch_size} contradicts '
                              f'global_train_batch_size / ranks = {device_batch}; set only one of them.')
    else:
        device_batch = config.device_train_batch_size
    micro = config.device_train_microbatch_size
    return device_batch, micro if micro == 'auto' else min(micro, device_batch)


def parallelism(config: TrainConfig, world_size: int) -> str:
    """What wraps the model on `world_size` ranks (see setup.prepare_model and parallel.py)."""
    fsdp = config.fsdp_config
    if world_size == 1:
        shards_later = f'; fsdp_config ({sharding_strategy(fsdp)}) shards from 2 ranks on' if fsdp else ''
        return f'single process, no process group{shards_later}'
    if fsdp is None:
        return f'DDP over {world_size} ranks (a full copy of the model on each; gradients all-reduced)'
    shape, names = mesh_shape(fsdp, world_size)
    mesh = ' x '.join(f'{name} {size}' for name, size in zip(names, shape))
    return f'FSDP2 {sharding_strategy(fsdp)} over {world_size} ranks (device mesh: {mesh})'


def precision(config: TrainConfig, world_size: int) -> str:
    """Autocast, and FSDP's mixed-precision policy where the model is sharded."""
    text = AUTOCAST[config.precision]
    fsdp = config.fsdp_config
    if fsdp is None or world_size == 1:
        return text
    policy = mixed_precision_policy(fsdp.mixed_precision, config.precision)
    setting = fsdp.mixed_precision if isinstance(fsdp.mixed_precision, str) else 'custom'
    return (f'{text}; FSDP mixed_precision {setting}: parameters in {_dtype(policy.param_dtype)}, gradients '
            f'reduced in {_dtype(policy.reduce_dtype)}, master weights and optimizer state in float32')


def _dtype(dtype: torch.dtype | None) -> str:
    return 'float32' if dtype is None else str(dtype).removeprefix('torch.')


def plan_layout(config: TrainConfig, world_size: int) -> Layout:
    """The layout of `config` on `world_size` ranks; config errors (batch not divisible, mesh) raise here."""
    device_batch, micro = device_batch_sizes(config, world_size)
    return Layout(world_size=world_size, parallelism=parallelism(config, world_size),
                  precision=precision(config, world_size), global_batch=device_batch * world_size,
                  device_batch=device_batch, microbatch=micro)
