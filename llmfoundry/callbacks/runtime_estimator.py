"""runtime_estimator: `time/remaining_estimate`, the wall time left until max_duration (Composer's name).

Linear extrapolation: the wall time spent per unit of progress since the first `skip_batches`
batches (which pay for allocation and compilation and would inflate the estimate), times the
progress still to go. The wall time includes evaluation, so evaluations still to come are
accounted for at the rate they have happened so far. With max_duration in epochs, progress inside
an epoch needs the epoch's length, so the estimate starts after the first epoch has ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from llmfoundry.config.time import Timestamp, TimeUnit, fraction_complete
from llmfoundry.interfaces import Callback, MetricLogger, TrainState

from ._wall_time import seconds_per


class RuntimeEstimator(Callback):
    def __init__(self, skip_batches: int = 1, time_unit: str = 'hours') -> None:
        if skip_batches < 0:
            raise ValueError(f'runtime_estimator.skip_batches must not be negative, got {skip_batches}.')
        self.skip_batches = skip_batches
        self.seconds_per_unit = seconds_per(time_unit, 'runtime_estimator')
        self.clock: Callable[[], float] = time.perf_counter  # tests substitute a fake clock
        self._first_batch = 0
        self._start: tuple[float, Timestamp] | None = None  # (clock, timestamp) where measuring began
        self._batches_per_epoch: int | None = None
        self._last_batch_in_epoch = 0

    def fit_start(self, state: TrainState, logger: MetricLogger) -> None:
        self._first_batch = state.timestamp.batch
        if self.skip_batches == 0:
            self._start = (self.clock(), state.timestamp)

    def epoch_end(self, state: TrainState, logger: MetricLogger) -> None:
        if self._batches_per_epoch is None and self._last_batch_in_epoch > 0:
            self._batches_per_epoch = self._last_batch_in_epoch

    def batch_end(self, state: TrainState, logger: MetricLogger) -> None:
        now, timestamp = self.clock(), state.timestamp
        self._last_batch_in_epoch = timestamp.batch_in_epoch
        if timestamp.batch - self._first_batch == self.skip_batches:
            self._start = (now, timestamp)
            return
        if self._start is None:
            return
        start_time, start_timestamp = self._start
        progress, start_progress = self._progress(timestamp, state), self._progress(start_timestamp, state)
        if progress is None or start_progress is None or progress <= start_progress:
            return
        remaining = (now - start_time) / (progress - start_progress) * (1.0 - progress)
        logger.log({'time/remaining_estimate': remaining / self.seconds_per_unit}, timestamp)

    def _progress(self, timestamp: Timestamp, state: TrainState) -> float | None:
        """Fraction of max_duration reached at `timestamp`; None while an epoch's length is unknown."""
        max_duration = state.max_duration
        if max_duration.unit is not TimeUnit.EPOCH:
            return fraction_complete(timestamp, max_duration)
        if self._batches_per_epoch is None:
            return None
        epochs = timestamp.epoch + timestamp.batch_in_epoch / self._batches_per_epoch
        return min(1.0, epochs / max_duration.value)
