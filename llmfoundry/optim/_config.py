"""The `name` lookup shared by the optimizer and scheduler builders.

Both sections are `{name: <registered name>, <kwarg>: <value>, ...}` dicts from a user's YAML; a typo must fail
loudly with the full key path and the closest valid key rather than be silently dropped, because a misspelled
`weight_decay` or `t_warmup` trains a different model without any other symptom.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar('T')


def lookup(cfg: Mapping[str, Any], registry: Mapping[str, T], path: str) -> tuple[str, T]:
    """The registered entry that `cfg['name']` names; errors list the registered names."""
    if not isinstance(cfg, Mapping):
        raise ValueError(f'{path} must be a mapping with a `name` key, got {cfg!r}.')
    if 'name' not in cfg:
        raise ValueError(f"{path}.name is required (registered: {', '.join(sorted(registry))}).")
    name = cfg['name']
    if name not in registry:
        close = difflib.get_close_matches(str(name), list(registry), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ''
        raise ValueError(f"unknown {path}.name={name!r}{hint} (registered: {', '.join(sorted(registry))})")
    return name, registry[name]
