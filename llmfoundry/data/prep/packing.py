"""Cut a stream of tokenised documents into rows of exactly N tokens (llm-foundry's concat semantics)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TOKEN_DTYPE = np.int32


class TokenPacker:
    """A running token buffer: `add` a document's tokens, get back the rows it completes.

    With `wrap`, the tokens left over after cutting rows carry over to the next row; without it they
    are dropped, so each time the buffer fills, exactly one row comes out and the buffer restarts.
    Tokens still buffered at the end of the stream never form a row.
    """

    def __init__(self, row_len: int, wrap: bool = True) -> None:
        if row_len <= 0:
            raise ValueError(f'row length must be positive, got {row_len}')
        self.row_len = row_len
        self.wrap = wrap
        self._parts: list[np.ndarray] = []
        self._size = 0

    def add(self, tokens: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        part = np.asarray(tokens, dtype=TOKEN_DTYPE)
        self._parts.append(part)
        self._size += len(part)
        if self._size < self.row_len:
            return []
        buffer = np.concatenate(self._parts)
        n_rows = len(buffer) // self.row_len if self.wrap else 1
        rows = [buffer[i * self.row_len:(i + 1) * self.row_len] for i in range(n_rows)]
        rest = buffer[n_rows * self.row_len:] if self.wrap else buffer[:0]
        self._parts = [rest]
        self._size = len(rest)
        return rows
