"""Splitting a device batch into microbatches and counting what a batch holds."""

from __future__ import annotations

import torch

from llmfoundry.data.labels import IGNORE_INDEX


def split_microbatches(batch: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    """Consecutive row slices of at most `size` rows (the last may be smaller)."""
    rows = batch['input_ids'].shape[0]
    return [{k: v[start:start + size] for k, v in batch.items()} for start in range(0, rows, size)]


def count_targets(labels: torch.Tensor) -> int:
    """Tokens that receive a loss: every label after the first position that is not IGNORE_INDEX."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
