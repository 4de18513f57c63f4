"""Deprecated alias: the interfaces moved to `llmfoundry.interfaces`, the registries to `llmfoundry.registry`.

Kept so plugins written against `from llmfoundry.train.events import Callback, callbacks` still load.
"""

from __future__ import annotations

import warnings

from llmfoundry.interfaces import Callback, DistInfo, LoggerDestination, MetricLogger, TrainState
from llmfoundry.registry import callbacks, loggers

__all__ = ['Callback', 'DistInfo', 'LoggerDestination', 'MetricLogger', 'TrainState', 'callbacks', 'loggers']

warnings.warn('llmfoundry.train.events is deprecated: import Callback, LoggerDestination, MetricLogger and '
              'TrainState from llmfoundry.interfaces, and the callbacks / loggers registries from llmfoundry.registry.',
              DeprecationWarning, stacklevel=2)
