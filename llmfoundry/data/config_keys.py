"""Config sections as plain containers."""

from __future__ import annotations

from typing import Any


def to_plain(cfg: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (resolved); anything else unchanged."""
    if type(cfg).__module__.startswith('omegaconf'):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
