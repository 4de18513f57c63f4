"""The MPT model family: `MPTConfig` and `MPTForCausalLM` (transformers-compatible)."""

from .configuration_mpt import MPTConfig
from .modeling_mpt import MPTForCausalLM, MPTModel

__all__ = ['MPTConfig', 'MPTForCausalLM', 'MPTModel']
