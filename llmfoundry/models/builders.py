"""The `model:` section of a training YAML -> a causal LM: `name` picks the builder (registered as `models` in
llmfoundry/registry.py), the other keys are its arguments."""

from __future__ import annotations

from typing import Any

from torch import nn

from llmfoundry.config.validation import ConfigError
from llmfoundry.registry import check_kwargs, models

from .fused_loss import install_fused_loss
from .hf_causal_lm import build_hf_causal_lm
from .mpt import MPTConfig, MPTForCausalLM
from .peft_adapter import add_adapter

__all__ = ['LOSS_FNS', 'build_hf_causal_lm', 'build_model', 'build_mpt_causal_lm']

LOSS_FNS = ('fused_crossentropy', 'torch_crossentropy')


def build_mpt_causal_lm(**config: Any) -> MPTForCausalLM:
    """llm-foundry's MPT: every other key of the section is an MPTConfig key."""
    try:
        return MPTForCausalLM(MPTConfig(**config))
    except ValueError as error:
        raise ConfigError(str(error).replace('MPTConfig: ', 'model: ')) from error


def build_model(section: dict[str, Any]) -> nn.Module:
    """The model the section describes; `loss_fn: fused_crossentropy` makes the model compute the training loss
    itself without full logits (fused_loss.py), `peft_config` adds a LoRA adapter to whatever the builder returns
    (peft_adapter.py), every other key goes to the builder."""
    _, builder = models.get_named(section, 'model')
    kwargs = {key: value for key, value in section.items() if key not in ('name', 'loss_fn', 'peft_config')}
    loss_fn = section.get('loss_fn')
    if loss_fn is not None and loss_fn not in LOSS_FNS:
        raise ConfigError(f"model.loss_fn={loss_fn!r} is invalid; allowed: {', '.join(LOSS_FNS)}.")
    check_kwargs(builder, kwargs, 'model')
    model = builder(**kwargs)
    if section.get('peft_config') is not None:
        add_adapter(model, section['peft_config'])
    if loss_fn == 'fused_crossentropy':
        install_fused_loss(model)
    return model
