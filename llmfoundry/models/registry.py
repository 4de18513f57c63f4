"""Deprecated alias: the model builders moved to `llmfoundry.models.builders`, the `models` registry to
`llmfoundry.registry`."""

from __future__ import annotations

import warnings

from llmfoundry.registry import models

from .builders import LOSS_FNS, build_hf_causal_lm, build_model, build_mpt_causal_lm

__all__ = ['LOSS_FNS', 'build_hf_causal_lm', 'build_model', 'build_mpt_causal_lm', 'models']

warnings.warn('llmfoundry.models.registry is deprecated: import build_model from llmfoundry.models.builders and the '
              'models registry from llmfoundry.registry.', DeprecationWarning, stacklevel=2)
