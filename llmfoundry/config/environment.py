"""The CUDA settings of a training config that only work as environment variables read when CUDA initialises:
max_split_size_mb and expandable_segments (PYTORCH_CUDA_ALLOC_CONF, the caching allocator's options) and
cuda_load_lazy (CUDA_MODULE_LOADING=LAZY). llm-foundry sets them the same way, replacing any value already set."""

from __future__ import annotations

from .schema import TrainConfig


def cuda_environment(config: TrainConfig) -> dict[str, str]:
    """The variables `config` sets (empty when it sets none)."""
    allocator = []
    if config.max_split_size_mb is not None:
        allocator.append(f'max_split_size_mb:{config.max_split_size_mb}')
    if config.expandable_segments:
        allocator.append('expandable_segments:True')
    variables = {'PYTORCH_CUDA_ALLOC_CONF': ','.join(allocator)} if allocator else {}
    if config.cuda_load_lazy:
        variables['CUDA_MODULE_LOADING'] = 'LAZY'
    return variables
