"""`metadata:` in the hyperparameters the loggers receive, as llm-foundry logs it: with flatten_metadata (the
default) its keys join the top level of the logged config in place of `metadata`, else it stays one nested entry."""

from __future__ import annotations

from typing import Any

from .schema import TrainConfig
from .validation import ConfigError


def logged_config(config: TrainConfig, resolved: dict[str, Any]) -> dict[str, Any]:
    """`resolved` (the mapping `config` came from) as the loggers' hyperparameters; ConfigError when a flattened
    metadata key would hide a config key."""
    metadata = config.metadata
    if not metadata or not config.flatten_metadata:
        return resolved
    rest = {key: value for key, value in resolved.items() if key != 'metadata'}
    clashes = sorted(set(rest) & set(metadata))
    if clashes:
        raise ConfigError(f"metadata keys {', '.join(clashes)} are also config keys, so flattening them into the "
                          'logged config would hide those: rename them in metadata, or set flatten_metadata: false.')
    return {**rest, **metadata}
