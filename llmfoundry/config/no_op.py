"""The llm-foundry keys that are accepted but have nothing to act on here, each with the reason.

Such a key stays valid (llm-foundry YAMLs carry it), so it must not be silently ignored either: set to a value other
than its default, it is reported once per run (by rank 0) with the reason. FSDP1-only fsdp_config knobs have their
own table next to the code that replaced them (train/parallel.py: FSDP1_ONLY_KNOBS).
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

from .schema import FSDPConfig, TrainConfig

log = logging.getLogger(__name__)

# dotted key -> why it has no effect
NO_OP_KEYS: dict[str, str] = {
    'spin_dataloaders': (
        "Composer replays the data loader's finished epochs on resume to restore its order; here each checkpoint "
        "holds the loader's own position, which resume restores directly, so there is nothing to spin"),
    'fsdp_config.load_monolith_rank0_only': (
        'checkpoints load through torch.distributed.checkpoint, where every rank reads only its own shards, so '
        'there is no full copy on rank 0 to broadcast'),
}


def _defaults(cls: type) -> dict[str, Any]:
    return {field.name: field.default for field in fields(cls)}


def _value_and_default(config: TrainConfig, path: str) -> tuple[Any, Any] | None:
    """The configured value at dotted `path` and its default (None when its section is absent)."""
    if path.startswith('fsdp_config.'):
        key = path.removeprefix('fsdp_config.')
        return None if config.fsdp_config is None else (getattr(config.fsdp_config, key), _defaults(FSDPConfig)[key])
    return getattr(config, path), _defaults(TrainConfig)[path]


def no_op_messages(config: TrainConfig) -> list[str]:
    """One line per no-op key of `config` set to a value other than its default."""
    messages = []
    for path, why in NO_OP_KEYS.items():
        found = _value_and_default(config, path)
        if found is not None and found[0] != found[1]:
            messages.append(f'{path}={found[0]!r} has no effect: {why}.')
    return messages


def warn_no_op_keys(config: TrainConfig) -> list[str]:
    """Log no_op_messages(config) as warnings; returns them."""
    messages = no_op_messages(config)
    for message in messages:
        log.warning(message)
    return messages
