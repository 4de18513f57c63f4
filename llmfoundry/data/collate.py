"""Batch token rows into model inputs: padded input_ids, attention_mask, labels and sequence_id."""

from __future__ import annotations

import torch

from llmfoundry.data.labels import IGNORE_INDEX


def sequence_ids(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, eos_token_id: int | None, bos_token_id: int | None
) -> torch.Tensor:
    """Index of the packed document each token belongs to, from 0 in each row; -1 at padding.

    With an EOS separator a new document starts after each EOS; with a BOS separator at each BOS
    (a BOS in the first position does not start a second document).
    """
    if eos_token_id is not None:
        is_eos = (input_ids == eos_token_id).long()
        ids = torch.cumsum(is_eos, dim=1) - is_eos  # EOS counts for the tokens after it
    else:
        is_bos = (input_ids == bos_token_id).long()
        ids = torch.cumsum(is_bos, dim=1) - is_bos[:, :1]
    return ids.masked_fill(attention_mask == 0, -1)


class TextCollator:
    """Pads 1-D LongTensors (right side) to `max_seq_len`; adds sequence_id when a separator is set."""

    def __init__(
        self, pad_token_id: int, max_seq_len: int, eos_token_id: int | None = None, bos_token_id: int | None = None
    ) -> None:
        if eos_token_id is not None and bos_token_id is not None:
            raise ValueError('set at most one of eos_token_id and bos_token_id')
        self.pad_token_id = pad_token_id
        self.max_seq_len = max_seq_len
        self.eos_token_id = eos_token_id
        self.bos_token_id = bos_token_id

    def __call__(self, rows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        input_ids = torch.full((len(rows), self.max_seq_len), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), self.max_seq_len), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, :len(row)] = row
            attention_mask[i, :len(row)] = 1
        batch = {
            'input_ids': input_ids,
            'attention_mask': attention_mask,
            'labels': input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX),
        }
        if self.eos_token_id is not None or self.bos_token_id is not None:
            batch['sequence_id'] = sequence_ids(input_ids, attention_mask, self.eos_token_id, self.bos_token_id)
        return batch
