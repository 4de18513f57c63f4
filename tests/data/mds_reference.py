"""Independent reference computations for the data tests (plain Python on the tokenizer's output)."""

from __future__ import annotations

import numpy as np
from streaming import StreamingDataset


def document_ids(docs: list[str], tokenizer, bos_text: str = '', eos_text: str = '') -> list[list[int]]:
    """Each document's ids: tokenizer(bos_text) + tokenizer(doc) + tokenizer(eos_text), one call each."""
    bos = tokenizer(bos_text, add_special_tokens=False)['input_ids'] if bos_text else []
    eos = tokenizer(eos_text, add_special_tokens=False)['input_ids'] if eos_text else []
    return [bos + tokenizer(doc)['input_ids'] + eos for doc in docs]


def expected_rows(docs: list[str], tokenizer, n: int, wrap: bool = True, bos_text: str = '',
                  eos_text: str = '') -> list[list[int]]:
    """Rows of n tokens per the spec: wrap = the whole concatenation cut every n tokens (the tail
    dropped); no_wrap = when the buffer reaches n, emit its first n tokens and empty it."""
    per_doc = document_ids(docs, tokenizer, bos_text, eos_text)
    if wrap:
        flat = [t for ids in per_doc for t in ids]
        return [flat[i:i + n] for i in range(0, len(flat) - n + 1, n)]
    rows, buffer = [], []
    for ids in per_doc:
        buffer += ids
        if len(buffer) >= n:
            rows.append(buffer[:n])
            buffer = []
    return rows


def read_rows(local: str, column: str = 'tokens', **kwargs) -> list:
    """Every sample's column, in stored order (no shuffle, one rank)."""
    dataset = StreamingDataset(local=local, batch_size=1, **kwargs)
    try:
        values = [dataset[i][column] for i in range(dataset.num_samples)]
    finally:
        del dataset
    return [v.tolist() if isinstance(v, np.ndarray) else v for v in values]
