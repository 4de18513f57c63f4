"""The eval YAML: llm-foundry's keys for `scripts/eval/eval.py`, what is not built refused by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmfoundry.config.loading import load_yaml
from llmfoundry.config.schema import FSDPConfig
from llmfoundry.config.validation import ConfigError, from_dict
from llmfoundry.train.parallel import sharding_strategy

from .gauntlet import GauntletConfig, parse_gauntlet
from .task_config import IclTaskConfig, load_section, load_tasks

NOT_BUILT = {
    'callbacks': 'callbacks do not run during `llmfoundry eval` (remove the section)',
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
    icl_tasks: list[Any] | str | None = None
    eval_loader: dict[str, Any] | None = None  # plain LM loss: one loader, or
    eval_loaders: list[dict[str, Any]] | None = None  # several, each with a `label`
    eval_subset_num_batches: int = -1  # batches per eval loader (-1: all)
    fsdp_config: FSDPConfig | None = None  # with several ranks: the model sharded with FSDP2
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
    _check_loaders(config)
    tasks = [] if config.icl_tasks is None else load_tasks(config.icl_tasks, config.max_seq_len,
                                                            config.device_eval_batch_size)
    return Evaluation(config, _models(config), tasks, _gauntlet(config.eval_gauntlet)), resolved


def _check_loaders(config: EvalConfig) -> None:
    """What to evaluate besides ICL tasks: the eval loaders, their subset and the sharding."""
    if config.icl_tasks is None and config.eval_loader is None and config.eval_loaders is None:
        raise ConfigError("The eval config evaluates nothing: give 'icl_tasks' and/or 'eval_loader' / "
                          "'eval_loaders' (plain LM loss).")
    if config.eval_loader is not None and config.eval_loaders is not None:
        raise ConfigError('Set either eval_loader or eval_loaders (a list, each with a label), not both.')
    if config.eval_loaders is not None:
        if not config.eval_loaders:
            raise ConfigError("'eval_loaders' is empty: give a list of loader sections, each with a 'label'.")
        for index, section in enumerate(config.eval_loaders):
            if not isinstance(section, dict) or not isinstance(section.get('label'), str):
                raise ConfigError(f"'eval_loaders[{index}]' needs a 'label' (a string): metrics are logged as "
                                  'metrics/eval/{label}/LanguageCrossEntropy.')
        labels = [section['label'] for section in config.eval_loaders]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ConfigError(f"'eval_loaders' labels must be unique; repeated: {', '.join(repeated)}.")
    if config.fsdp_config is not None:
        sharding_strategy(config.fsdp_config)  # a bad strategy is refused before any rank builds a model
    if config.eval_subset_num_batches < -1 or config.eval_subset_num_batches == 0:
        raise ConfigError(f'eval_subset_num_batches={config.eval_subset_num_batches}: use -1 (every batch) or a '
                          'positive number of batches per eval loader.')


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


def _gauntlet(value: Any) -> GauntletConfig | None:
    if value is None:
        return None
    return parse_gauntlet(load_section(value, 'eval_gauntlet'))
