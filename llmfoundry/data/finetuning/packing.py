"""Packing: several examples per row of max_seq_len tokens, so fewer tokens are padding.

Each batch takes int(device_batch_size * packing_ratio) examples and packs them, longest first, each into the
first row with room (first-fit decreasing), together with the rows left over from earlier batches. The fullest
device_batch_size rows are emitted; the rest wait for the next batch (at most max_leftover_bins_to_keep of them;
unset keeps all). Tokens that never reach an emitted row are waste.

packing_ratio 'auto' (llm-foundry's rule): profile candidate ratios from 1 to max_seq_len / 100 on the sizes of
the first examples and take the largest before the first one that wastes tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Generic, TypeVar

import numpy as np

log = logging.getLogger(__name__)

T = TypeVar('T')
AUTO_CANDIDATES = 20
PROFILE_BATCHES = 100  # the profile covers 100 batches at the largest candidate ratio
MIN_AUTO_SEQ_LEN = 100  # shorter rows leave nothing to pack: llm-foundry's auto returns 1 there


class Packer(Generic[T]):
    """First-fit-decreasing packing of items of known sizes into `num_bins` bins of `max_size`, with leftovers."""

    def __init__(self, num_bins: int, max_size: int, max_leftover_bins: int | None = None) -> None:
        if num_bins <= 0 or max_size <= 0:
            raise ValueError(f'num_bins ({num_bins}) and max_size ({max_size}) must be positive')
        if max_leftover_bins is not None and max_leftover_bins < 0:
            raise ValueError(f'max_leftover_bins_to_keep must be >= 0, got {max_leftover_bins}')
        self.num_bins = num_bins
        self.max_size = max_size
        self.max_leftover_bins = max_leftover_bins
        self.leftovers: list[tuple[int, list[T]]] = []
        self.packed_tokens = 0
        self.total_tokens = 0

    @property
    def waste(self) -> float:
        """The fraction of the items' tokens that did not reach an emitted bin (so far)."""
        return 1 - self.packed_tokens / self.total_tokens if self.total_tokens else 0.0

    def pack(self, items: Sequence[T], sizes: Sequence[int]) -> list[list[T]]:
        """Up to num_bins bins (lists of items), fullest first."""
        bins = self.leftovers
        order = sorted(range(len(items)), key=lambda i: sizes[i], reverse=True)
        for position, index in enumerate(order):
            size, item = sizes[index], items[index]
            if len(order) - position <= self.num_bins - len(bins):  # every remaining item must open a bin
                bins.append((size, [item]))
                continue
            fit = next((b for b, (used, _) in enumerate(bins) if used + size <= self.max_size), None)
            if fit is None:
                bins.append((size, [item]))
            else:
                used, content = bins[fit]
                bins[fit] = (used + size, content + [item])
        bins.sort(key=lambda entry: entry[0], reverse=True)
        emitted, rest = bins[:self.num_bins], bins[self.num_bins:]
        self.leftovers = rest if self.max_leftover_bins is None else rest[:self.max_leftover_bins]
        self.total_tokens += sum(sizes)
        self.packed_tokens += sum(used for used, _ in emitted)
        return [content for _, content in emitted]


def candidate_ratios(max_seq_len: int, device_batch_size: int) -> list[float]:
    """Ratios from 1 to max_seq_len / 100 (rounded to 0.1), one per distinct number of examples per batch."""
    ratios, raw_sizes = [], set()
    for ratio in np.linspace(1, max_seq_len / MIN_AUTO_SEQ_LEN, AUTO_CANDIDATES):
        ratio = float(np.round(10 * ratio) / 10)
        raw = int(ratio * device_batch_size)
        if raw not in raw_sizes:
            ratios.append(ratio)
            raw_sizes.add(raw)
    return ratios


def profile_size(max_seq_len: int, device_batch_size: int) -> int:
    """How many example sizes `auto_packing_ratio` wants."""
    if max_seq_len <= MIN_AUTO_SEQ_LEN:
        return 0
    return int(max(candidate_ratios(max_seq_len, device_batch_size)) * device_batch_size) * PROFILE_BATCHES


def waste_at(ratio: float, sizes: Sequence[int], max_seq_len: int, device_batch_size: int,
             max_leftover_bins: int | None) -> float | None:
    """The waste of packing `sizes` in order at `ratio`; None when not even one full batch is there (so a ratio
    needing more examples per batch than the dataset holds is never picked)."""
    raw = int(ratio * device_batch_size)
    packer: Packer[int] = Packer(device_batch_size, max_seq_len, max_leftover_bins)
    batches = 0
    for start in range(0, len(sizes), raw):
        chunk = sizes[start:start + raw]
        if len(chunk) < raw:
            continue
        packer.pack(chunk, chunk)
        batches += 1
    return packer.waste if batches else None


def auto_packing_ratio(sizes: Sequence[int], max_seq_len: int, device_batch_size: int,
                       max_leftover_bins: int | None = None) -> float:
    """The largest candidate ratio that wastes nothing on `sizes` (the token counts of the first examples).

    Every rank profiles the same first examples, so every rank picks the same ratio without communicating."""
    if max_seq_len <= MIN_AUTO_SEQ_LEN:
        return 1.0
    chosen = 1.0
    for ratio in candidate_ratios(max_seq_len, device_batch_size):
        waste = waste_at(ratio, sizes, max_seq_len, device_batch_size, max_leftover_bins)
        if waste is None or waste > 0:
            break
        chosen = ratio
    return chosen
