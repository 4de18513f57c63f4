"""TokenPacker rows and the collator's input_ids / attention_mask / labels / sequence_id."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmfoundry.data.collate import TextCollator, sequence_ids
from llmfoundry.data.labels import IGNORE_INDEX
from llmfoundry.data.prep.packing import TokenPacker


def _pack(docs: list[list[int]], n: int, wrap: bool) -> list[list[int]]:
    packer = TokenPacker(n, wrap)
    return [row.tolist() for doc in docs for row in packer.add(doc)]


@pytest.mark.parametrize('wrap', [True, False])
def test_packer_matches_spec_on_random_documents(wrap: bool) -> None:
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 1000, size=rng.integers(0, 40)).tolist() for _ in range(200)]
    n = 16
    if wrap:
        flat = [t for d in docs for t in d]
        expected = [flat[i:i + n] for i in range(0, len(flat) - n + 1, n)]
    else:
        expected, buffer = [], []
        for d in docs:
            buffer += d
            if len(buffer) >= n:
                expected.append(buffer[:n])
                buffer = []
    assert _pack(docs, n, wrap) == expected


def test_packer_no_wrap_long_document_gives_one_row() -> None:
    assert _pack([list(range(10))], 4, wrap=False) == [[0, 1, 2, 3]]
    assert _pack([list(range(10))], 4, wrap=True) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_sequence_ids_eos_and_bos() -> None:
    ids = torch.tensor([[5, 0, 7, 8, 0, 9], [0, 3, 4, 0, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    # EOS (0): a new document starts after each EOS; padding is -1.
    assert sequence_ids(ids, mask, eos_token_id=0, bos_token_id=None).tolist() == [
        [0, 0, 1, 1, 1, 2], [0, 1, 1, 1, -1, -1]]
    # BOS (0): a new document starts at each BOS; a leading BOS starts document 0.
    assert sequence_ids(ids, mask, eos_token_id=None, bos_token_id=0).tolist() == [
        [0, 1, 1, 1, 2, 2], [0, 0, 0, 1, -1, -1]]


def test_collator_pads_and_masks_labels() -> None:
    collate = TextCollator(pad_token_id=1, max_seq_len=5, eos_token_id=0)
    batch = collate([torch.tensor([4, 0, 6]), torch.tensor([7, 8, 9, 0, 2])])
    assert batch['input_ids'].tolist() == [[4, 0, 6, 1, 1], [7, 8, 9, 0, 2]]
    assert batch['attention_mask'].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch['labels'].tolist() == [[4, 0, 6, IGNORE_INDEX, IGNORE_INDEX], [7, 8, 9, 0, 2]]
    assert batch['sequence_id'].tolist() == [[0, 0, 1, -1, -1], [0, 0, 0, 0, 1]]
    assert all(t.dtype == torch.long for t in batch.values())
    # Padding id equal to EOS: labels still keep real EOS tokens (masking goes by attention_mask).
    same = TextCollator(pad_token_id=0, max_seq_len=3)([torch.tensor([0, 5])])
    assert same['labels'].tolist() == [[0, 5, IGNORE_INDEX]] and 'sequence_id' not in same
    with pytest.raises(ValueError, match='at most one'):
        TextCollator(1, 5, eos_token_id=0, bos_token_id=0)
