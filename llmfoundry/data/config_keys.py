"""Key checking for config sections: an unknown key names its full path and the closest valid key."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any


def to_plain(cfg: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (resolved); anything else unchanged."""
    if type(cfg).__module__.startswith('omegaconf'):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def check_keys(cfg: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    allowed = sorted(allowed)
    for key in cfg:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean '{path}.{close[0]}'?" if close else ''
            raise ValueError(f"unknown key '{path}.{key}'{hint} (accepted: {', '.join(allowed)})")
