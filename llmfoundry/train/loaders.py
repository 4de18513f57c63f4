"""The loader sections of a training config (train_loader, eval_loader or eval_loaders) and their builders."""

from __future__ import annotations

from typing import Any

from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.validation import ConfigError
from llmfoundry.data.errors import DataError
from llmfoundry.registry import dataloaders


def eval_sections(config: TrainConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, config path, section) of each eval loader; the label is '' for a single eval_loader."""
    if config.eval_loader:
        return [('', 'eval_loader', config.eval_loader)]
    sections = []
    for index, section in enumerate(config.eval_loaders or []):
        label = section.get('label', f'eval{index}')
        sections.append((label, f'eval_loaders.{label}', {k: v for k, v in section.items() if k != 'label'}))
    return sections


def loader_sections(config: TrainConfig) -> list[tuple[str, dict[str, Any]]]:
    """(config path, section) of every loader the run builds, the train loader first."""
    return [('train_loader', config.train_loader)] + [(path, section) for _, path, section in eval_sections(config)]


def build_loader(section: dict[str, Any], tokenizer: Any, batch_size: int, path: str) -> Any:
    """The registered loader `section['name']` names (default 'text'); `path` names the section in errors."""
    _, builder = dataloaders.get_named(section, path, default='text')
    try:
        return builder(dict(section), tokenizer, batch_size, path)
    except DataError as error:  # bad data found while building (e.g. finetuning examples): one line, exit 2
        raise ConfigError(f'{path}: {error}') from error
