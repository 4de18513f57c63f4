"""The `algorithms:` section: Composer's training-loop algorithms; only gradient clipping is built."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from llmfoundry.config.validation import ConfigError

GradientClipping = Callable[[Iterable[nn.Parameter]], Any]


def build_gradient_clipping(algorithms: dict[str, Any] | None) -> GradientClipping | None:
    """algorithms.gradient_clipping {clipping_type: norm | value, clipping_threshold} -> a function of the parameters
    that clips their gradients in place (None without it)."""
    algorithms = dict(algorithms or {})
    unknown = set(algorithms) - {'gradient_clipping'}
    if unknown:
        raise ConfigError(f"algorithms.{sorted(unknown)[0]} is not supported; available: gradient_clipping.")
    spec = algorithms.get('gradient_clipping')
    if spec is None:
        return None
    spec = dict(spec)
    kind, threshold = spec.pop('clipping_type', 'norm'), spec.pop('clipping_threshold', None)
    if spec:
        raise ConfigError(f"algorithms.gradient_clipping.{next(iter(spec))}: unknown key; valid keys: "
                          'clipping_type, clipping_threshold.')
    if not isinstance(threshold, (int, float)) or threshold <= 0:
        raise ConfigError('algorithms.gradient_clipping.clipping_threshold must be a positive number.')
    if kind == 'norm':
        return lambda params: torch.nn.utils.clip_grad_norm_(list(params), threshold)
    if kind == 'value':
        return lambda params: torch.nn.utils.clip_grad_value_(list(params), threshold)
    raise ConfigError(f"algorithms.gradient_clipping.clipping_type={kind!r} is invalid; allowed: norm, value.")
