"""The one table of llm-foundry keys whose features are not built here yet.

Such a key is spelled right, so it must never read like a typo: setting it says the feature is not supported
yet. Unset (absent or null) it is accepted and dropped, so llm-foundry YAMLs that carry `tp_config: null` load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .validation import ConfigError


def _not_yet(key: str, feature: str) -> str:
    return f'{key} is not supported yet ({feature} is not built); remove it (or set it to null) for now.'


# top-level key -> the error when it is set
NOT_BUILT: dict[str, str] = {
    'models': ('this looks like an llm-foundry evaluation YAML (it lists `models:`): run it with `llmfoundry eval`; '
               '`llmfoundry train` needs a training YAML (model:, train_loader:, optimizer:, ...).'),
    **{key: (f'{key} is not supported yet: the ICL tasks\' length is icl_seq_len (default: max_seq_len); use that '
             'instead, or remove it (or set it to null).') for key in ('icl_max_seq_len', 'icl_seq_len_buffer')},
    'tp_config': _not_yet('tp_config', 'tensor parallelism'),
}

# Mixture-of-experts: MPT's megablocks FFNs and the Hugging Face MoE architectures (DBRX is llm-foundry's own).
MOE_FFN_TYPES = ('mb_moe', 'mb_dmoe')
MOE_MODEL_TYPES = ('dbrx', 'mixtral', 'qwen2_moe', 'qwen3_moe', 'deepseek_v2', 'deepseek_v3', 'olmoe', 'jamba')
MOE_HUB_PREFIX = 'databricks/dbrx'  # DBRX hub ids, recognised without downloading their config.json


def check_not_built(config: dict[str, Any]) -> None:
    """Raise for the first key in `config` that names a feature not built yet.

    MoE goes first: MoE YAMLs (DBRX's) also carry ICL and finetuning keys, and the model is the bigger gap."""
    model = config.get('model')
    if isinstance(model, dict):
        check_not_moe(model)
    for key, message in NOT_BUILT.items():
        if config.get(key) is not None:
            raise ConfigError(message)


def check_not_moe(model: dict[str, Any]) -> None:
    """Refuse a mixture-of-experts model: ffn_config.ffn_type mb_moe / mb_dmoe or any moe_* key, in the model
    section or its config_overrides, or a Hugging Face MoE model (its local config.json's model_type, or a DBRX id)."""
    overrides = model.get('config_overrides')
    for where, section in (('model', model), ('model.config_overrides', overrides)):
        ffn = section.get('ffn_config') if isinstance(section, dict) else None
        if not isinstance(ffn, dict):
            continue
        if ffn.get('ffn_type') in MOE_FFN_TYPES:
            raise ConfigError(_moe(f"{where}.ffn_config.ffn_type={ffn['ffn_type']}"))
        moe_keys = sorted(key for key in ffn if str(key).startswith('moe_'))
        if moe_keys:
            raise ConfigError(_moe(f"{where}.ffn_config.{moe_keys[0]}"))
    name = model.get('pretrained_model_name_or_path')
    model_type = _hf_model_type(name) if isinstance(name, str) else None
    if model_type in MOE_MODEL_TYPES or isinstance(name, str) and name.lower().startswith(MOE_HUB_PREFIX):
        raise ConfigError(_moe(f'model.pretrained_model_name_or_path={name} (a {model_type or "dbrx"} model)'))


def _moe(what: str) -> str:
    return (f'{what}: mixture-of-experts (MoE) models are not supported (no expert-parallel FFN is built); '
            'use a dense model (ffn_type mptmlp or mptglu).')


def _hf_model_type(name: str) -> str | None:
    """model_type of a local Hugging Face folder's config.json (None for a hub id or an unreadable file)."""
    path = Path(name) / 'config.json'
    try:
        return json.loads(path.read_text(encoding='utf-8')).get('model_type')
    except (OSError, ValueError, AttributeError):
        return None


def without_unset(config: dict[str, Any]) -> dict[str, Any]:
    """`config` without the not-built keys that are present but null (the schema does not know them)."""
    return {key: value for key, value in config.items() if not (key in NOT_BUILT and value is None)}
