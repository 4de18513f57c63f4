"""Random-number-generator state of one rank: capture, restore, or reseed after a world-size change.

Every rank draws from its own generators (dropout masks, data order helpers), so a checkpoint keeps one
state per rank. A checkpoint written by N ranks restored on M != N ranks has no state for some ranks and
the old states no longer mean the same thing, so every rank reseeds instead from (seed, rank, batch):
deterministic for a given restart, different per rank and per resume point. Restoring on the same world
size is exact.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture() -> dict[str, Any]:
    """This process's generator states, as tensors, numbers, strings and containers only (safe to unpickle)."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        'torch': torch.get_rng_state(),
        'numpy': (name, keys.tolist(), pos, has_gauss, cached_gaussian),
        'python': random.getstate(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Put back what `capture` returned (on the same rank of the same world size)."""
    torch.set_rng_state(state['torch'])
    name, keys, pos, has_gauss, cached_gaussian = state['numpy']
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    random.setstate(_as_tuples(state['python']))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def reseed(seed: int, rank: int, batch: int) -> None:
    """Seed every generator from (seed, rank, batch) when a checkpoint's states cannot be reused."""
    derived = int(np.random.SeedSequence([seed, rank, batch]).generate_state(1)[0])
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)  # also seeds every CUDA device


def _as_tuples(value: Any) -> Any:
    """random.setstate wants the nested tuples it produced; a serializer may hand lists back."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
