"""Conversion progress (documents/s, tokens/s) and the closing summary line."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

from tqdm import tqdm

log = logging.getLogger(__name__)

_PLAIN_INTERVAL_S = 30.0  # without a terminal: one plain line this often, not a redrawn bar


@dataclass
class Stats:
    documents: int = 0
    tokens: int = 0
    samples: int = 0
    shards: int = 0
    seconds: float = 0.0

    def add(self, other: Stats) -> None:
        self.documents += other.documents
        self.tokens += other.tokens
        self.samples += other.samples
        self.shards += other.shards

    def summary(self, dest: str) -> str:
        secs = max(self.seconds, 1e-9)
        return (
            f'done: {self.documents} documents, {self.tokens} tokens, {self.samples} samples, '
            f'{self.shards} shards in {self.seconds:.1f} s ({self.documents / secs:.0f} documents/s, '
            f'{self.tokens / secs:.0f} tokens/s) -> {dest}'
        )


class Progress:
    """Shows running totals; `update` takes absolute totals so several workers' counters can feed it.

    With `total_groups` (a conversion in groups) the bar counts groups done and shows documents and tokens/s
    beside it; otherwise it counts documents.
    """

    def __init__(self, desc: str, total_groups: int | None = None) -> None:
        self.start = time.perf_counter()
        self._tty = sys.stderr.isatty()
        self._last_plain = self.start
        self._desc = desc
        self._groups = total_groups is not None
        self._bar = tqdm(
            desc=desc, total=total_groups, unit=' groups' if self._groups else ' docs', file=sys.stderr,
            disable=not self._tty, dynamic_ncols=True,
        )  # fmt: skip
        self._count = 0

    def update(self, documents: int, tokens: int, groups_done: int = 0) -> None:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        count = groups_done if self._groups else documents
        if self._tty:
            self._bar.update(count - self._count)
            docs = f'{documents:,} docs, ' if self._groups else ''
            self._bar.set_postfix_str(f'{docs}{tokens / elapsed:,.0f} tokens/s', refresh=False)
        elif time.perf_counter() - self._last_plain >= _PLAIN_INTERVAL_S:
            self._last_plain = time.perf_counter()
            groups = f'{groups_done}/{self._bar.total} groups, ' if self._groups else ''
            print(
                f'{self._desc}: {groups}{documents} documents, {tokens} tokens, '
                f'{documents / elapsed:.0f} documents/s, {tokens / elapsed:.0f} tokens/s',
                file=sys.stderr, flush=True,
            )  # fmt: skip
        self._count = count

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def close(self) -> None:
        self._bar.close()
