"""`datasets` streaming sources for the converters, without importing torch."""

from __future__ import annotations

import sys
from typing import Any


def load_streaming(path: str, **kwargs: Any) -> Any:
    """`datasets.load_dataset(path, streaming=True, **kwargs)`.

    A streaming dataset imports torch when built (seconds), only to share its epoch counter with torch DataLoader
    workers. The converters iterate in their own processes, so unless torch is loaded already, datasets is told
    for the rest of the process to build datasets as it does where torch is not installed.
    """
    import datasets

    if 'torch' not in sys.modules:
        datasets.config.TORCH_AVAILABLE = False
    return datasets.load_dataset(path, streaming=True, **kwargs)
