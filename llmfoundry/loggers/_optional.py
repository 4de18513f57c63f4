"""Imports of the optional packages behind the wandb, tensorboard and mlflow loggers.

They are extras (pip install 'llmfoundry[wandb]'), imported only when a run configures the logger,
so that a missing one fails with the install command rather than a bare ModuleNotFoundError.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def import_extra(module: str, extra: str, logger_name: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"loggers.{logger_name} needs the '{module}' package: pip install 'llmfoundry[{extra}]'"
                          ) from error
