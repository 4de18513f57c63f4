"""`model: {name: hf_causal_lm, ...}`: any transformers causal LM, with llm-foundry's keys.

init_device:
  cpu    every rank builds the whole model (from_pretrained / from_config) on the CPU.
  meta   every rank builds the architecture with parameters on the meta device (buffers stay real: rotary
         inv_freq and the like are small and cannot be re-derived once lost). After sharding,
         train/parallel.py fills each rank's local shard (train/hf_init.py): from the folder's safetensors
         (`pretrained: true`, each rank reads only its slices) or from the model's own `_init_weights`
         (`pretrained: false`, seeded per module so the values do not depend on the world size).
  mixed  llm-foundry builds rank 0 on CPU and the others on meta, then broadcasts; here every rank takes the
         meta path, which ends with the same weights on every rank without holding a second full copy.

With `pretrained_lora_id_or_path` on meta the adapter's layers are injected on meta and each rank reads its slices
of the adapter's weights from its adapter_model.safetensors the same way.

The weights' source for the meta path travels on the model as `META_INIT_ATTR` (a `MetaInit`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, PretrainedConfig, PreTrainedModel

from llmfoundry.config.validation import ConfigError

from .peft_adapter import SAVE_PEFT_ONLY_ATTR, load_adapter

log = logging.getLogger(__name__)

INIT_DEVICES = ('cpu', 'meta', 'mixed')
META_INIT_ATTR = 'llmfoundry_meta_init'
SAFETENSORS_INDEX = 'model.safetensors.index.json'
SAFETENSORS_FILE = 'model.safetensors'
ADAPTER_FILE = 'adapter_model.safetensors'  # peft's
# key -> (its default, why another value changes nothing here)
NO_EFFECT_KEYS = {
    'use_train_metrics': (True, 'the trainer always computes its train metrics (LanguageCrossEntropy, ...)'),
    'use_logits': (True, 'the trainer computes the loss from the logits (or, with loss_fn: fused_crossentropy, '
                         'from the last hidden state)'),
    'additional_train_metrics': (None, 'the trainer computes a fixed set of train metrics'),
    'additional_eval_metrics': (None, 'the trainer computes a fixed set of eval metrics'),
    'allow_embedding_resizing': (False, 'embeddings are never resized to the tokenizer'),
}
_warned: set[str] = set()


@dataclass(frozen=True)
class MetaInit:
    """Where a meta-built model's weights come from: a local folder of safetensors, or (None) `_init_weights`
    seeded by `seed` (drawn from torch's global generator at build time, so it follows the run's seed); a LoRA
    adapter's from `adapter_file`, or (None) peft's init seeded by `seed` too."""

    weights_folder: Path | None
    seed: int
    adapter_file: Path | None = None


def warn_once(key: str, message: str) -> None:
    """Log `message` the first time `key` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


# ----- config_overrides ----------------------------------------------------------------------------------------
def _merge_mapping(current: Mapping[str, Any], override: Mapping[str, Any], path: str) -> dict[str, Any]:
    """`current` with `override` merged key by key (nested mappings recursively); unknown keys are typos."""
    merged = dict(current)
    for key, value in override.items():
        if key not in current:
            raise ConfigError(f'{path}.{key}: unknown key; {path} has: {", ".join(map(str, current)) or "no keys"}.')
        old = current[key]
        merged[key] = (_merge_mapping(old, value, f'{path}.{key}')
                       if isinstance(old, Mapping) and isinstance(value, Mapping) else value)
    return merged


def apply_config_overrides(config: PretrainedConfig, overrides: Mapping[str, Any],
                           path: str = 'model.config_overrides') -> None:
    """Merge `overrides` into `config` in place: a mapping merges into a sub-config (e.g. MptConfig.attn_config)
    or a dict attribute key by key, keeping the fields it does not name; anything else replaces the value."""
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ConfigError(f"{path}.{key}: {type(config).__name__} has no attribute '{key}'.")
        current = getattr(config, key)
        if isinstance(value, Mapping) and isinstance(current, PretrainedConfig):
            apply_config_overrides(current, value, f'{path}.{key}')
        elif isinstance(value, Mapping) and isinstance(current, Mapping):
            setattr(config, key, _merge_mapping(current, value, f'{path}.{key}'))
        else:
            setattr(config, key, dict(value) if isinstance(value, Mapping) else value)


# ----- keys ----------------------------------------------------------------------------------------------------
def _auth_token(token: str | bool | None, use_auth_token: str | bool | None) -> str | bool | None:
    if use_auth_token is None or use_auth_token is False:
        return token
    warn_once('use_auth_token', 'model.use_auth_token is deprecated: use model.token (passed on as token).')
    if token is not None and token != use_auth_token:
        raise ConfigError('model.use_auth_token and model.token disagree; set only model.token.')
    return use_auth_token


def _attention(use_flash_attention_2: bool, attn_implementation: str | None) -> str | None:
    if use_flash_attention_2 and attn_implementation not in (None, 'flash_attention_2'):
        warn_once('use_flash_attention_2', f'model.use_flash_attention_2: true overrides '
                  f'attn_implementation={attn_implementation!r} with flash_attention_2.')
    attn = 'flash_attention_2' if use_flash_attention_2 else attn_implementation
    if attn == 'flash_attention_2' and importlib.util.find_spec('flash_attn') is None:
        key = 'use_flash_attention_2: true' if use_flash_attention_2 else 'attn_implementation: flash_attention_2'
        raise ConfigError(f'model.{key} needs the flash_attn package, which is not installed; install flash-attn '
                          'or remove the key (transformers then picks sdpa).')
    return attn


def _refuse_unbuilt(load_in_8bit: bool) -> None:
    if load_in_8bit:
        raise ConfigError('model.load_in_8bit: true is not supported (8-bit bitsandbytes weights cannot be trained '
                          'under FSDP); remove the key.')


def _warn_no_effect(values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        default, why = NO_EFFECT_KEYS[key]
        if value != default:
            warn_once(key, f'model.{key}={value!r} has no effect: {why}.')


def _init_device(init_device: str) -> str:
    if init_device not in INIT_DEVICES:
        raise ConfigError(f'model.init_device={init_device!r} is invalid; allowed: {", ".join(INIT_DEVICES)}.')
    return 'cpu' if init_device == 'cpu' else 'meta'  # mixed: see the module doc


# ----- the meta path -------------------------------------------------------------------------------------------
def safetensors_folder(name_or_path: str, token: str | bool | None) -> Path:
    """The local folder holding `name_or_path`'s safetensors (a hub name is fetched into the cache); a folder of
    pytorch_model.bin only cannot be read one tensor at a time and is refused."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name_or_path, token=token, allow_patterns=['*.safetensors', '*.json']))
    if not ((folder / SAFETENSORS_INDEX).is_file() or (folder / SAFETENSORS_FILE).is_file()):
        raise ConfigError(f'model.init_device: meta reads weights from safetensors, but {name_or_path} has no '
                          f'{SAFETENSORS_FILE} or {SAFETENSORS_INDEX}; use init_device: cpu, or convert the '
                          'weights to safetensors (save_pretrained(..., safe_serialization=True)).')
    return folder


def adapter_file(name_or_path: str, token: str | bool | None) -> Path:
    """The local adapter_model.safetensors of the saved adapter `name_or_path` (a hub name is fetched into the
    cache); an adapter saved as adapter_model.bin cannot be read one tensor at a time and is refused."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name_or_path, token=token, allow_patterns=['adapter_*']))
    if not (folder / ADAPTER_FILE).is_file():
        raise ConfigError(f'model.pretrained_lora_id_or_path={name_or_path!r}: init_device: meta reads the adapter '
                          f'from {ADAPTER_FILE}, which it lacks; use init_device: cpu.')
    return folder / ADAPTER_FILE


def safetensors_index(folder: Path) -> dict[str, Path]:
    """Tensor name -> the file of `folder` that holds it (sharded checkpoints list theirs in the index)."""
    index = folder / SAFETENSORS_INDEX
    if not index.is_file():
        from safetensors import safe_open

        with safe_open(folder / SAFETENSORS_FILE, 'pt') as handle:
            return {key: folder / SAFETENSORS_FILE for key in handle.keys()}  # noqa: SIM118 - not a dict
    weight_map = json.loads(index.read_text(encoding='utf-8'))['weight_map']
    return {key: folder / file for key, file in weight_map.items()}


_REGISTER_PARAMETER = nn.Module.register_parameter


def _register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
    if param is not None and not param.is_meta:
        param = nn.Parameter(param.to('meta'), requires_grad=param.requires_grad)
    _REGISTER_PARAMETER(module, name, param)


def build_on_meta(config: PretrainedConfig, trust_remote_code: bool) -> PreTrainedModel:
    """The architecture with every parameter on the meta device and real buffers (see module doc)."""
    nn.Module.register_parameter = _register_on_meta
    try:
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    finally:
        nn.Module.register_parameter = _REGISTER_PARAMETER
    model.tie_weights()  # tying may be skipped for parameters that were not real when post_init ran
    return model


def _generation_config(source: str, token: str | bool | None) -> GenerationConfig | None:
    try:
        return GenerationConfig.from_pretrained(source, token=token)
    except OSError:  # the folder has none: keep the one from_config derived
        return None


# ----- the builder ---------------------------------------------------------------------------------------------
def build_hf_causal_lm(
    pretrained_model_name_or_path: str,
    pretrained: bool = True,
    config_overrides: dict[str, Any] | None = None,
    trust_remote_code: bool = True,
    init_device: str = 'cpu',
    token: str | bool | None = None,
    use_auth_token: str | bool | None = None,
    use_flash_attention_2: bool = False,
    attn_implementation: str | None = None,
    load_in_8bit: bool = False,
    pretrained_lora_id_or_path: str | None = None,
    use_train_metrics: bool = True,
    use_logits: bool = True,
    additional_train_metrics: list[str] | None = None,
    additional_eval_metrics: list[str] | None = None,
    allow_embedding_resizing: bool = False,
    should_save_peft_only: bool = True,
) -> PreTrainedModel:
    """Any transformers causal LM by hub name or local folder, with llm-foundry's hf_causal_lm keys (module doc);
    `pretrained: false` starts from the model's own random init. `pretrained_lora_id_or_path` adds a saved peft
    adapter to train further; `should_save_peft_only` makes exports of an adapted model the adapter alone."""
    _refuse_unbuilt(load_in_8bit)
    _warn_no_effect({'use_train_metrics': use_train_metrics, 'use_logits': use_logits,
                     'additional_train_metrics': additional_train_metrics,
                     'additional_eval_metrics': additional_eval_metrics,
                     'allow_embedding_resizing': allow_embedding_resizing})
    model = _build(pretrained_model_name_or_path, pretrained, config_overrides, trust_remote_code, init_device,
                   _auth_token(token, use_auth_token), _attention(use_flash_attention_2, attn_implementation))
    if pretrained_lora_id_or_path is not None:
        model = load_adapter(model, pretrained_lora_id_or_path, _auth_token(token, use_auth_token))
        if (source := getattr(model, META_INIT_ATTR, None)) is not None:  # on meta: the adapter's weights come later
            file = adapter_file(pretrained_lora_id_or_path, _auth_token(token, use_auth_token))
            setattr(model, META_INIT_ATTR, dataclasses.replace(source, adapter_file=file))
    setattr(model, SAVE_PEFT_ONLY_ATTR, should_save_peft_only)
    return model


def _build(pretrained_model_name_or_path: str, pretrained: bool, config_overrides: dict[str, Any] | None,
           trust_remote_code: bool, init_device: str, token: str | bool | None, attn: str | None) -> PreTrainedModel:
    device = _init_device(init_device)
    extra = {'attn_implementation': attn} if attn else {}
    # use_cache off, as llm-foundry does: a KV cache filled in training is waste, and activation checkpointing
    # would fill it twice.
    config = AutoConfig.from_pretrained(pretrained_model_name_or_path, trust_remote_code=trust_remote_code,
                                        token=token, use_cache=False, **extra)
    apply_config_overrides(config, config_overrides or {})
    if device == 'cpu':
        if pretrained:
            return AutoModelForCausalLM.from_pretrained(pretrained_model_name_or_path, config=config, token=token,
                                                        trust_remote_code=trust_remote_code)
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    folder = safetensors_folder(pretrained_model_name_or_path, token) if pretrained else None
    model = build_on_meta(config, trust_remote_code)
    if pretrained and (generation := _generation_config(pretrained_model_name_or_path, token)) is not None:
        model.generation_config = generation
    setattr(model, META_INIT_ATTR, MetaInit(folder, int(torch.randint(0, 2**31 - 1, ()))))
    return model
