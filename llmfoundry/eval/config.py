"""The eval YAML: llm-foundry's keys for `scripts/eval/eval.py`, what is not built refused by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfoundry.config.loading import load_yaml
from llmfoundry.config.validation import ConfigError, from_dict

from .gauntlet import GauntletConfig, parse_gauntlet
from .task_config import IclTaskConfig, parse_task, with_defaults

NOT_BUILT = {
    'eval_loader': 'plain LM-loss evaluation (eval_loader/eval_loaders) is not built in `llmfoundry eval`',
    'eval_loaders': 'plain LM-loss evaluation (eval_loader/eval_loaders) is not built in `llmfoundry eval`',
    'eval_subset_num_batches': 'plain LM-loss evaluation is not built in `llmfoundry eval`',
    'fsdp_config': 'evaluation runs a full copy of the model on every rank; sharded evaluation is not built',
    'callbacks': 'callbacks do not run during `llmfoundry eval`',
}


@dataclass
class ModelEntry:
    model_name: str
    model: dict[str, Any]
    tokenizer: dict[str, Any]
    load_path: str | None = None


@dataclass
class EvalConfig:
    max_seq_len: int
    device_eval_batch_size: int
    icl_tasks: list[Any] | str
    models: list[dict[str, Any]] | None = None
    model: dict[str, Any] | None = None  # a single model: model + tokenizer (+ load_path, model_name)
    tokenizer: dict[str, Any] | None = None
    load_path: str | None = None
    model_name: str | None = None
    seed: int = 17
    precision: str = 'amp_bf16'
    eval_gauntlet: dict[str, Any] | str | None = None
    run_name: str | None = None
    dist_timeout: float = 600.0
    icl_subset_num_batches: int | None = None
    log_config: bool = True
    loggers: dict[str, Any] | None = None
    python_log_level: str | None = 'debug'


@dataclass
class Evaluation:
    """The checked eval config with its tasks and gauntlet read (from files where the YAML names them)."""
    config: EvalConfig
    models: list[ModelEntry]
    tasks: list[IclTaskConfig]
    gauntlet: GauntletConfig | None


def load_eval_config(path: str | Path, overrides: list[str] | None = None) -> tuple[Evaluation, dict[str, Any]]:
    """(the evaluation, the resolved YAML) for `path` with `key=value` overrides."""
    resolved = load_yaml(path, overrides)
    for key, why in NOT_BUILT.items():
        if key in resolved:
            raise ConfigError(f"'{key}': {why}.")
    config = from_dict(EvalConfig, resolved)
    return Evaluation(config, _models(config), _tasks(config), _gauntlet(config.eval_gauntlet)), resolved


def _models(config: EvalConfig) -> list[ModelEntry]:
    single = config.model is not None or config.tokenizer is not None
    if config.models is not None and (single or config.load_path or config.model_name):
        raise ConfigError("Give either 'models' (a list) or a single 'model' and 'tokenizer', not both.")
    if config.models is not None:
        if not config.models:
            raise ConfigError("'models' is empty.")
        return [from_dict(ModelEntry, entry, f'models[{i}]') for i, entry in enumerate(config.models)]
    if config.model is None or config.tokenizer is None:
        raise ConfigError("The eval config needs 'models' (a list of {model_name, model, tokenizer, load_path}) "
                          "or a single 'model' and 'tokenizer'.")
    name = config.model_name or str(config.model.get('name', 'model'))
    return [ModelEntry(name, config.model, config.tokenizer, config.load_path)]


def _section_from_file(value: Any, key: str) -> Any:
    """`value` itself, or when it is a path, the YAML file's `key` entry (llm-foundry's tasks/gauntlet files)."""
    if not isinstance(value, str):
        return value
    content = load_yaml(value)
    if key not in content:
        raise ConfigError(f"'{key}'={value!r}: the file has no top-level '{key}' key.")
    return content[key]


def _tasks(config: EvalConfig) -> list[IclTaskConfig]:
    entries = _section_from_file(config.icl_tasks, 'icl_tasks')
    if not isinstance(entries, list) or not entries:
        raise ConfigError("'icl_tasks' must be a non-empty list of tasks (or the path of a YAML file holding one).")
    tasks = [with_defaults(parse_task(entry, i), config.max_seq_len, config.device_eval_batch_size)
             for i, entry in enumerate(entries)]
    labels = [t.label for t in tasks]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise ConfigError(f"'icl_tasks' labels must be unique; repeated: {', '.join(duplicated)}.")
    return tasks


def _gauntlet(value: Any) -> GauntletConfig | None:
    if value is None:
        return None
    return parse_gauntlet(_section_from_file(value, 'eval_gauntlet'))
