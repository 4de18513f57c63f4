"""Read a training YAML: OmegaConf + command-line overrides + `variables:` interpolation, then validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .not_built import check_not_built, without_unset
from .schema import TOP_LEVEL_HINT, TrainConfig
from .validation import ConfigError, from_dict


def load_yaml(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The YAML at `path` with `key.sub=value` overrides applied and every interpolation resolved.

    `variables:` is removed from the result: it only feeds interpolations such as ${variables.data_local}.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f'Config file {path} does not exist.')
    try:
        config = OmegaConf.load(path)
        if overrides:
            bad = [o for o in overrides if '=' not in o]
            if bad:
                raise ConfigError(f"Overrides must look like key.subkey=value; got {', '.join(bad)}.")
            config = OmegaConf.merge(config, OmegaConf.from_dotlist(list(overrides)))
        resolved = OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f'{path}: {error}') from error
    if not isinstance(resolved, dict):
        raise ConfigError(f'{path} must hold a mapping at the top level.')
    resolved.pop('variables', None)
    return resolved


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """The validated TrainConfig and the resolved mapping it came from (saved with the run).

    Keys of features not built yet are refused first, so they never read like typos of the keys we have.
    """
    resolved = load_yaml(path, overrides)
    check_not_built(resolved)
    resolved = without_unset(resolved)
    return from_dict(TrainConfig, resolved, hint_unknown=TOP_LEVEL_HINT), resolved
