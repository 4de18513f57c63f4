"""A text corpus every Python install carries: the standard library's own modules (code with English docstrings
and comments). The quickstart trains on it offline, and the test suite builds its fixtures from it."""

from __future__ import annotations

import sysconfig
from pathlib import Path


def stdlib_sources(total_bytes: int, max_file_bytes: int) -> list[Path]:
    """Top-level stdlib modules in name order (a stable corpus on one Python version), up to total_bytes."""
    root = Path(sysconfig.get_paths()['stdlib'])
    chosen, size = [], 0
    for path in sorted(root.glob('*.py')):
        n = path.stat().st_size
        if 200 < n <= max_file_bytes:
            chosen.append(path)
            size += n
            if size >= total_bytes:
                break
    return chosen
