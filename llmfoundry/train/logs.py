"""Log lines of a run: once (from rank 0) unless a line is about one rank, and tagged with the rank.

With several ranks every line carries `[rank N]`. Records of llmfoundry's loggers below WARNING are shown by
rank 0 only, since every rank logs the same ones (`Saved checkpoint ...`); a record that is about its own
rank passes anyway when logged with `extra=RANK_SPECIFIC`. Other libraries' records are left alone.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

RANK_SPECIFIC = {'rank_specific': True}
FORMAT = '%(asctime)s %(levelname)s %(rank_tag)s%(name)s: %(message)s'
_PACKAGE = 'llmfoundry'


class RankFilter(logging.Filter):
    """Adds `rank_tag` to every record; drops llmfoundry's sub-WARNING records on ranks other than 0."""

    def __init__(self, rank: int, world_size: int) -> None:
        super().__init__()
        self.rank = rank
        self.tag = f'[rank {rank}] ' if world_size > 1 else ''

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank_tag = self.tag
        if self.rank == 0 or record.levelno >= logging.WARNING or getattr(record, 'rank_specific', False):
            return True
        return not (record.name == _PACKAGE or record.name.startswith(f'{_PACKAGE}.'))


class CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record arrives (test runners and notebooks replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """StreamHandler.__init__ sets it; the handler keeps following sys.stderr instead."""


def configure_logging(level: str | None, rank: int, world_size: int) -> None:
    """One stderr handler on the root logger (replacing the one a previous call added); llmfoundry's loggers
    at `level` (python_log_level), everything else at INFO."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, CurrentStderr)]:
        root.removeHandler(handler)
    handler = CurrentStderr()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RankFilter(rank, world_size))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    logging.getLogger(_PACKAGE).setLevel((level or 'info').upper())
