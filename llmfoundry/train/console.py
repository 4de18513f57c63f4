"""Console output: a progress bar on an interactive terminal, plain log lines otherwise (files, CI, schedulers).

Callbacks log at every batch but the console shows training metrics only at `console_log_interval`
(the first logging event at or after each multiple of it); evaluation metrics are always shown.
A plain line reads `[batch 12/100] loss/train/total: 3.2100 ...`. With the bar, training metrics
appear as its postfix and evaluation results as lines above it.
"""

from __future__ import annotations

import math
import sys
from typing import TextIO

from tqdm import tqdm

from llmfoundry.config.time import Time, Timestamp, TimeUnit, crossed
from llmfoundry.interfaces import LoggerDestination

_BAR_METRIC = 'loss/train/total'


def format_value(value: float) -> str:
    """Four decimals for ordinary magnitudes, scientific for tiny or huge ones (learning rates, FLOP/s)."""
    if isinstance(value, int) or not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return f'{value:.4f}'
    return f'{value:.4e}'


def progress_label(timestamp: Timestamp, max_duration: Time) -> str:
    """`batch 12/100`, or the batch count next to the run's own unit when max_duration is not in batches."""
    unit = max_duration.unit
    if unit is TimeUnit.BATCH:
        return f'batch {timestamp.batch}/{max_duration.value}'
    if unit is TimeUnit.EPOCH:
        return f'epoch {timestamp.epoch}/{max_duration.value}, batch {timestamp.batch}'
    return f'batch {timestamp.batch}, {unit.value} {timestamp.get(unit)}/{max_duration.value}'


def format_line(metrics: dict[str, float], timestamp: Timestamp, max_duration: Time) -> str:
    values = ' '.join(f'{name}: {format_value(value)}' for name, value in metrics.items())
    return f'[{progress_label(timestamp, max_duration)}] {values}'


class ConsoleLogger(LoggerDestination):
    def __init__(self, interval: Time | str | int, progress_bar: bool, max_duration: Time | str | int,
                 stream: TextIO | None = None) -> None:
        self.interval = Time.parse(interval, 'console_log_interval')
        self.max_duration = Time.parse(max_duration, 'max_duration')
        self.stream = stream or sys.stderr
        self.use_bar = progress_bar and self.stream.isatty()
        self._bar: tqdm | None = None
        self._previous = Timestamp()  # the last timestamp a decision was made for
        self._due = False

    def _is_due(self, timestamp: Timestamp) -> bool:
        """Whether training metrics of this batch are shown: the interval was crossed since the last batch seen."""
        if timestamp.batch != self._previous.batch:
            self._due = crossed(self._previous, timestamp, self.interval, self.max_duration)
            self._previous = timestamp
        return self._due

    def log_metrics(self, metrics: dict[str, float], timestamp: Timestamp) -> None:
        is_eval = any('/eval/' in name for name in metrics)
        if self.use_bar:
            self._update_bar(metrics, timestamp, is_eval)
        elif is_eval or self._is_due(timestamp):
            self.stream.write(format_line(metrics, timestamp, self.max_duration) + '\n')
            self.stream.flush()

    def _update_bar(self, metrics: dict[str, float], timestamp: Timestamp, is_eval: bool) -> None:
        if self._bar is None:
            self._bar = tqdm(total=self.max_duration.value, unit=self.max_duration.unit.value, file=self.stream,
                             dynamic_ncols=True)
        self._bar.n = timestamp.get(self.max_duration.unit)
        if _BAR_METRIC in metrics:
            self._bar.set_postfix_str(f'{_BAR_METRIC}: {format_value(metrics[_BAR_METRIC])}', refresh=False)
        if is_eval:
            self._bar.write(format_line(metrics, timestamp, self.max_duration), file=self.stream)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
