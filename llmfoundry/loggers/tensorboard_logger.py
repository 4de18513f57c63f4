"""tensorboard: scalars to a TensorBoard event file (Composer's TensorboardLogger keys).

The writer is created at the first logging call (rank 0 only), in `log_dir` or `<run folder>/tensorboard`.
Event files are flushed every `flush_interval` batches and at the end, so a live TensorBoard lags at
most that much. The resolved config is stored as a text entry (it holds nested, non-scalar values
that TensorBoard's hparams view cannot show).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmfoundry.config.time import Timestamp
from llmfoundry.interfaces import LoggerDestination

from ._optional import import_extra


class TensorBoardLogger(LoggerDestination):
    def __init__(self, log_dir: str | None = None, flush_interval: int = 100, *, run_folder: Path,
                 default_name: str) -> None:
        """`default_name` is accepted so that every logger is built with the same arguments; TensorBoard
        names runs by their folder."""
        self._tensorboard = import_extra('torch.utils.tensorboard', 'tensorboard', 'tensorboard')
        self.log_dir = Path(log_dir) if log_dir else Path(run_folder) / 'tensorboard'
        self.flush_interval = flush_interval
        self._writer = None
        self._flushed_at = 0

    @property
    def writer(self):
        if self._writer is None:
            self._writer = self._tensorboard.SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def log_hyperparameters(self, config: dict[str, Any]) -> None:
        text = json.dumps(config, indent=2, default=str)
        self.writer.add_text('hyperparameters', f'```\n{text}\n```')

    def log_metrics(self, metrics: dict[str, float], timestamp: Timestamp) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, global_step=timestamp.batch)
        if timestamp.batch - self._flushed_at >= self.flush_interval:
            self.writer.flush()
            self._flushed_at = timestamp.batch

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
