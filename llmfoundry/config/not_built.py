"""The one table of llm-foundry keys and loaders whose features are not built here yet.

Such a key is spelled right, so it must never read like a typo: setting it says the feature is not supported
yet. Unset (absent or null) it is accepted and dropped, so llm-foundry YAMLs that carry `icl_tasks: null` load.
"""

from __future__ import annotations

from typing import Any

from .validation import ConfigError

_ICL = 'in-context-learning (ICL) evaluation'
_GAUNTLET = 'the evaluation gauntlet'
_PEFT = 'PEFT / LoRA finetuning'


def _not_yet(key: str, feature: str) -> str:
    return f'{key} is not supported yet ({feature} is not built); remove it (or set it to null) for now.'


# dotted key path -> the error when it is set
NOT_BUILT: dict[str, str] = {
    'models': ('this looks like an llm-foundry evaluation YAML (it lists `models:`), and evaluation is not built '
               'yet: `llmfoundry train` needs a training YAML (model:, train_loader:, optimizer:, ...).'),
    **{key: _not_yet(key, _ICL) for key in ('icl_tasks', 'icl_tasks_str', 'icl_max_seq_len', 'icl_seq_len_buffer',
                                           'icl_seq_len', 'icl_subset_num_batches')},
    **{key: _not_yet(key, _GAUNTLET) for key in ('eval_gauntlet', 'eval_gauntlet_str')},
    **{key: _not_yet(key, _PEFT) for key in ('peft_config', 'model.peft_config')},
    'tp_config': _not_yet('tp_config', 'tensor parallelism'),
    'profiler': _not_yet('profiler', 'the profiler'),
    'save_ignore_keys': _not_yet('save_ignore_keys', 'leaving keys out of a checkpoint'),
    'load_ignore_keys': _not_yet('load_ignore_keys', 'skipping checkpoint keys on load'),
}
# train_loader.name / eval_loader.name values -> why
NOT_BUILT_LOADERS: dict[str, str] = {
    'finetuning': 'finetuning loaders (instruction, chat and long-context data) are not built yet; available: text',
}
LOADER_SECTIONS = ('train_loader', 'eval_loader')


def check_not_built(config: dict[str, Any]) -> None:
    """Raise for the first key or loader in `config` that names a feature not built yet."""
    for path, message in NOT_BUILT.items():
        parent, key = _parent(config, path)
        if parent is not None and parent.get(key) is not None:
            raise ConfigError(message)
    for path, section in _loader_sections(config):
        name = section.get('name')
        if isinstance(name, str) and name in NOT_BUILT_LOADERS:
            raise ConfigError(f'{path}.name={name} is not supported yet: {NOT_BUILT_LOADERS[name]}.')


def without_unset(config: dict[str, Any]) -> dict[str, Any]:
    """`config` without the not-built keys that are present but null (the schema does not know them)."""
    for path in NOT_BUILT:
        config = _drop_null(config, path.split('.'))
    return config


def _drop_null(node: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    """A copy of `node` without the null entry at `parts` (unchanged when there is none)."""
    head, rest = parts[0], parts[1:]
    if not rest:
        return {k: v for k, v in node.items() if not (k == head and v is None)}
    child = node.get(head)
    return {**node, head: _drop_null(child, rest)} if isinstance(child, dict) else node


def _parent(config: dict[str, Any], path: str) -> tuple[dict[str, Any] | None, str]:
    """The mapping that holds the last part of dotted `path` (None when a section on the way is missing)."""
    *sections, key = path.split('.')
    node: Any = config
    for section in sections:
        node = node.get(section) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), key


def _loader_sections(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, config[path]) for path in LOADER_SECTIONS if isinstance(config.get(path), dict)]
    loaders = config.get('eval_loaders')
    if isinstance(loaders, list):
        found += [(f'eval_loaders[{i}]', s) for i, s in enumerate(loaders) if isinstance(s, dict)]
    return found
