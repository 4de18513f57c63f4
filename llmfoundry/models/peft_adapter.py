"""LoRA adapters (`model.peft_config`, llm-foundry's keys) through the `peft` extra, injected in place.

`peft.inject_adapter_in_model` swaps each targeted nn.Linear for a LoRA layer inside the model itself, so the model
keeps its class, its forward signature (MPT's `sequence_id`), its decoder blocks for sharding and its checkpoint
keys apart from the LoRA parts: a targeted base weight is named `<path>.base_layer.weight` and its adapter
`<path>.lora_A.default.weight` / `<path>.lora_B.default.weight`. peft freezes every other parameter. The model
carries peft's `peft_config` ({'default': LoraConfig}), which is how the rest of llmfoundry recognises it.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from llmfoundry.config.validation import ConfigError

if TYPE_CHECKING:
    from peft import LoraConfig

log = logging.getLogger(__name__)
T = TypeVar('T')

ADAPTER = 'default'  # peft's adapter name; the only adapter a model carries here
SAVE_PEFT_ONLY_ATTR = 'llmfoundry_save_peft_only'  # should_save_peft_only, read by the exporter
ADAPTER_PREFIX = 'base_model.model.'  # how a PeftModel names its base model's weights in adapter files


def _peft() -> Any:
    try:
        import peft
    except ImportError as error:
        raise ConfigError('model.peft_config needs the peft package: pip install llmfoundry[peft].') from error
    return peft


def lora_config(section: Mapping[str, Any]) -> LoraConfig:
    """`model.peft_config` as a peft LoraConfig; like llm-foundry, only peft_type LORA and task_type CAUSAL_LM."""
    peft = _peft()
    for key, wanted in (('peft_type', 'LORA'), ('task_type', 'CAUSAL_LM')):
        if str(section.get(key, '')).upper() != wanted:
            raise ConfigError(f'model.peft_config.{key}={section.get(key)!r}: only {wanted} is supported.')
    kwargs = {key: value for key, value in section.items() if key != 'peft_type'}  # LoraConfig sets its own
    try:
        return peft.LoraConfig(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f'model.peft_config: {error}') from error


def has_adapter(model: nn.Module) -> bool:
    """Whether `model` carries an injected LoRA adapter."""
    return bool(getattr(model, 'peft_config', None))


def adapter_config(model: nn.Module) -> LoraConfig:
    """The LoraConfig of `model`'s adapter."""
    return model.peft_config[ADAPTER]


def _on_meta(model: nn.Module) -> bool:
    return any(param.is_meta for param in model.parameters())


def add_adapter(model: nn.Module, section: Mapping[str, Any]) -> nn.Module:
    """Inject a new LoRA adapter described by `section` into `model` (in place; also on the meta device, where
    the adapter weights stay on meta until the model is materialised)."""
    if has_adapter(model):
        raise ConfigError('model: set either peft_config or pretrained_lora_id_or_path (its adapter carries its '
                          'own config), not both.')
    config = lora_config(section)
    try:
        _peft().inject_adapter_in_model(config, model, adapter_name=ADAPTER, low_cpu_mem_usage=_on_meta(model))
    except ValueError as error:  # e.g. target_modules matching nothing
        raise ConfigError(f'model.peft_config: {error}') from error
    _log_trainable(model)
    return model


def load_adapter(model: nn.Module, name_or_path: str, token: str | bool | None = None) -> nn.Module:
    """Add the saved adapter `name_or_path` (a peft folder or hub name) to `model` to train it further. A model on
    the meta device only gets the adapter's layers: its weights come later, from a checkpoint."""
    peft = _peft()
    try:
        if _on_meta(model):
            config = peft.LoraConfig.from_pretrained(name_or_path, token=token)
            config.inference_mode = False
            return peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER, low_cpu_mem_usage=True)
        # PeftModel injects into `model` in place; the wrapper around it is not kept (see module doc).
        wrapper = peft.PeftModel.from_pretrained(model, name_or_path, adapter_name=ADAPTER, is_trainable=True,
                                                 token=token)
    except (OSError, ValueError) as error:  # no such folder or hub name, or not a LoRA adapter
        raise ConfigError(f'model.pretrained_lora_id_or_path={name_or_path!r}: {error}') from error
    model = wrapper.get_base_model()
    _log_trainable(model)
    return model


def _log_trainable(model: nn.Module) -> None:
    trainable = sum(param.numel() for param in model.parameters() if param.requires_grad)
    total = sum(param.numel() for param in model.parameters())
    log.info('LoRA: %s of %s parameters are trainable (%.2f%%)', f'{trainable:,}', f'{total:,}',
             100 * trainable / max(total, 1))


# ----- names and initial values (meta-device init) ------------------------------------------------------------
def base_name(name: str) -> str:
    """The name a parameter or module has in the model without the adapter (`x.base_layer.weight` -> `x.weight`,
    `x.base_layer` -> `x`)."""
    return re.sub(r'\.base_layer(?=\.|$)', '', name)


def is_adapter_parameter(name: str) -> bool:
    """Whether `name` is an adapter parameter (peft names LoRA's own parameters `lora_*`)."""
    return any(part.startswith('lora_') for part in name.split('.'))


def adapter_file_key(name: str) -> str:
    """The key of adapter parameter `name` in peft's adapter_model.safetensors (PeftModel's prefix, no adapter name:
    `x.lora_A.default.weight` -> `base_model.model.x.lora_A.weight`)."""
    return ADAPTER_PREFIX + re.sub(rf'\.{ADAPTER}(?=\.|$)', '', name)


def under_adapted_names(base_state: Mapping[str, T], names: Iterable[str]) -> dict[str, T]:
    """`base_state` (keyed by the names of the model without the adapter, e.g. a pretraining checkpoint) keyed by
    the matching `names` of the adapted model; keys no base weight of `names` has are kept as they are."""
    adapted = {base_name(name): name for name in names if not is_adapter_parameter(name)}
    return {adapted.get(key, key): value for key, value in base_state.items()}


def check_meta_init(model: nn.Module) -> None:
    """The adapter initialisations `initial_adapter_value` reproduces; the others depend on the base weights."""
    config = adapter_config(model)
    on_embedding = any('lora_embedding' in name for name, _ in model.named_parameters())
    if config.use_dora or config.init_lora_weights is not True or on_embedding:
        raise ConfigError('model.peft_config: use_dora, init_lora_weights other than true and adapters on '
                          'embeddings are initialised from the base weights or differently; use '
                          'model.init_device: cpu.')


def initial_adapter_value(shape: torch.Size, name: str, generator: torch.Generator) -> torch.Tensor:
    """peft's default LoRA init of a full parameter: lora_A uniform in +-1/sqrt(fan_in) (kaiming_uniform with
    a=sqrt(5)), lora_B zero, so the adapted model starts equal to the base model."""
    value = torch.zeros(tuple(shape), dtype=torch.float32)
    if '.lora_A.' in name:
        bound = 1 / math.sqrt(shape[1])
        value.uniform_(-bound, bound, generator=generator)
    return value


# ----- export --------------------------------------------------------------------------------------------------
def adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor], base_class: type[nn.Module]
                       ) -> dict[str, torch.Tensor]:
    """The adapter's tensors of `state` (a full state dict of `model`) under the names peft's adapter files use."""
    from peft import get_peft_model_state_dict

    # peft matches the state's keys against the model's module names: a clean clone has the same names as the
    # state dict, which a model under checkpoint wrappers does not.
    clone = _adapted_clone(model, base_class).model
    adapter = get_peft_model_state_dict(clone, state_dict=state, adapter_name=ADAPTER)
    if not adapter:
        raise ValueError(f'the state dict holds no weights of the adapter of {base_class.__name__}.')
    return {ADAPTER_PREFIX + name: tensor for name, tensor in adapter.items()}


def base_clone(model: nn.Module, base_class: type[nn.Module]) -> nn.Module:
    """A `base_class` model (the class `model` had before sharding) of `model`'s config and generation config,
    without the adapter, with its parameters on the meta device."""
    config = copy.deepcopy(model.config)
    if hasattr(config, 'init_device'):  # MPT allocates its weights on init_device
        config.init_device = 'meta'
    with torch.device('meta'):
        clone = base_class(config)
    if hasattr(model, 'generation_config'):
        clone.generation_config = copy.deepcopy(model.generation_config)
    return clone


def _adapted_clone(model: nn.Module, base_class: type[nn.Module]) -> Any:
    """peft's LoraModel around a meta `base_clone` carrying the same adapter as `model`."""
    from peft import LoraModel

    return LoraModel(base_clone(model, base_class), copy.deepcopy(adapter_config(model)), ADAPTER,
                     low_cpu_mem_usage=True)


def merged_model(model: nn.Module, state: dict[str, torch.Tensor], base_class: type[nn.Module]) -> nn.Module:
    """A `base_class` model holding `state` (a full state dict of `model`) with each adapter merged into its base
    weight by peft; its tensors are those of `state` or new merged ones."""
    tuner = _adapted_clone(model, base_class)
    clone = tuner.model
    # peft merges into the base weight in place: those tensors are copied so that `state`, and a model whose
    # tensors it may share, keep their values.
    state = {name: tensor.clone() if '.base_layer.' in name else tensor for name, tensor in state.items()}
    missing, _ = clone.load_state_dict(state, assign=True, strict=False)
    if any(is_adapter_parameter(name) or '.base_layer.' in name for name in missing):
        raise ValueError(f'the state dict lacks adapter weights: {", ".join(missing)}.')
    if hasattr(clone, 'tie_weights'):
        clone.tie_weights()  # a tied weight may be in `state` once
    merged = tuner.merge_and_unload()
    if hasattr(merged.config, 'init_device'):
        merged.config.init_device = 'cpu'  # the weights are real now; an exported config must not ask for meta
    return merged


def merged_state_dict(model: nn.Module, state: dict[str, torch.Tensor], base_class: type[nn.Module]
                      ) -> dict[str, torch.Tensor]:
    """`state` (a full state dict of `model`) with each adapter merged into its base weight, under the base
    model's names."""
    merged = merged_model(model, state, base_class).state_dict()
    return {name: tensor for name, tensor in merged.items() if not tensor.is_meta}
