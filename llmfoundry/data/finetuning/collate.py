"""Masked rows -> a batch: input_ids, attention_mask, labels (aligned, -100 where no loss) and sequence_id.

A batch row holds one example, or several when packing: sequence_id numbers them from 0 (-1 at padding), so a
model with attn_uses_sequence_id keeps them from attending to each other, and the first label of every packed
example after the first is -100, so no loss predicts an example's first token from the one before it (the loss
of each example is the same packed or not). Padding is on the right.
"""

from __future__ import annotations

import torch

from llmfoundry.data.finetuning.masking import Row
from llmfoundry.data.finetuning.packing import Packer
from llmfoundry.data.labels import IGNORE_INDEX

PAD_MULTIPLE = 8  # allow_pad_trimming keeps a multiple of 8 positions, as llm-foundry


def pad_bins(bins: list[list[Row]], pad_token_id: int, length: int) -> dict[str, torch.Tensor]:
    """One batch row per bin, `length` positions each."""
    shape = (len(bins), length)
    batch = {
        'input_ids': torch.full(shape, pad_token_id, dtype=torch.long),
        'attention_mask': torch.zeros(shape, dtype=torch.long),
        'labels': torch.full(shape, IGNORE_INDEX, dtype=torch.long),
        'sequence_id': torch.full(shape, -1, dtype=torch.long),
    }
    for row, examples in enumerate(bins):
        start = 0
        for number, (input_ids, labels) in enumerate(examples):
            end = start + len(input_ids)
            batch['input_ids'][row, start:end] = torch.tensor(input_ids)
            batch['labels'][row, start:end] = torch.tensor(labels)
            if number:
                batch['labels'][row, start] = IGNORE_INDEX
            batch['attention_mask'][row, start:end] = 1
            batch['sequence_id'][row, start:end] = number
            start = end
    return batch


class FinetuningCollator:
    """Pads rows to max_seq_len; with a `packer`, packs them first (into packer.num_bins rows).

    allow_pad_trimming: every batch after the first is cut to its longest row, rounded up to a multiple of 8
    (the first stays full length, so memory problems show at once). pad_to_longest: every batch is cut to its
    longest row."""

    def __init__(self, pad_token_id: int, max_seq_len: int, allow_pad_trimming: bool = False,
                 pad_to_longest: bool = False, packer: Packer[Row] | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.max_seq_len = max_seq_len
        self.allow_pad_trimming = allow_pad_trimming
        self.pad_to_longest = pad_to_longest
        self.packer = packer
        self._seen_first_batch = False

    def __call__(self, rows: list[Row]) -> dict[str, torch.Tensor]:
        if self.packer is None:
            bins = [[row] for row in rows]
        else:
            bins = self.packer.pack(rows, [len(ids) for ids, _ in rows])
        longest = max(sum(len(ids) for ids, _ in examples) for examples in bins)
        length = self.max_seq_len
        if self.pad_to_longest:
            length = longest
        elif self.allow_pad_trimming and self._seen_first_batch:
            length = min(self.max_seq_len, -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE)
        self._seen_first_batch = True
        return pad_bins(bins, self.pad_token_id, length)
