"""speed_monitor: training throughput, model FLOP/s, MFU and wall-clock time, with Composer's metric names.

Rates are averaged over the last `window_size` batches and logged only once the window is full (as
Composer does), so the slow first batches (allocation, compilation) do not distort them. A batch's
time runs from the previous batch's end (or evaluation's end) to its own end: data loading counts,
evaluation does not. Samples and tokens are global (all ranks); the `device` variants divide by the
world size. FLOPs come from the model's analytic count (MPT models); MFU also needs the device's
peak, which is known only for the chips in `peak_flops` (otherwise it is omitted, never guessed).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import torch

from llmfoundry.interfaces import Callback, MetricLogger, TrainState
from llmfoundry.models.accounting import flops_per_token
from llmfoundry.models.mpt.configuration_mpt import MPTConfig

from ._wall_time import seconds_per
from .peak_flops import peak_flops


def model_flops_per_token(state: TrainState) -> float | None:
    """Training FLOPs per token of the state's model at max_seq_len, or None for models we cannot count."""
    config = getattr(state.model, 'config', None)
    if isinstance(config, MPTConfig):
        return flops_per_token(config, state.config.max_seq_len)
    return None


def device_peak_flops(state: TrainState) -> float | None:
    """Peak FLOP/s of this rank's device at the run's precision (None on CPU and on unknown chips)."""
    device = state.dist.device
    if device.type != 'cuda':
        return None
    return peak_flops(torch.cuda.get_device_name(device), state.config.precision)


class SpeedMonitor(Callback):
    def __init__(self, window_size: int = 100, gpu_flops_available: float | None = None,
                 time_unit: str = 'hours') -> None:
        if window_size < 1:
            raise ValueError(f'speed_monitor.window_size must be at least 1, got {window_size}.')
        self.window_size = window_size
        self.gpu_flops_available = gpu_flops_available
        self.seconds_per_unit = seconds_per(time_unit, 'speed_monitor')
        self.clock: Callable[[], float] = time.perf_counter  # tests substitute a fake clock
        self._window: deque[tuple[float, int, int]] = deque(maxlen=window_size)  # (seconds, samples, tokens)
        self._mark = 0.0
        self._train_seconds = 0.0
        self._eval_seconds = 0.0
        self._flops_per_token: float | None = None
        self._peak: float | None = None

    def fit_start(self, state: TrainState, logger: MetricLogger) -> None:
        self._mark = self.clock()
        self._flops_per_token = model_flops_per_token(state)
        self._peak = self.gpu_flops_available or device_peak_flops(state)

    def _lap(self) -> float:
        now = self.clock()
        seconds, self._mark = now - self._mark, now
        return seconds

    def batch_end(self, state: TrainState, logger: MetricLogger) -> None:
        seconds = self._lap()
        self._train_seconds += seconds
        self._window.append((seconds, state.batch_samples, state.batch_tokens))
        metrics = self._wall_clock()
        if len(self._window) == self.window_size:
            metrics.update(self._throughput(state.dist.world_size))
        logger.log(metrics, state.timestamp)

    def eval_end(self, state: TrainState, logger: MetricLogger, metrics: dict[str, float]) -> None:
        self._eval_seconds += self._lap()

    def _wall_clock(self) -> dict[str, float]:
        unit = self.seconds_per_unit
        return {'wall_clock/train': self._train_seconds / unit, 'wall_clock/val': self._eval_seconds / unit,
                'wall_clock/total': (self._train_seconds + self._eval_seconds) / unit}

    def _throughput(self, world_size: int) -> dict[str, float]:
        seconds = sum(s for s, _, _ in self._window)
        if seconds <= 0:
            return {}
        rates = {'batches_per_sec': len(self._window) / seconds,
                 'samples_per_sec': sum(n for _, n, _ in self._window) / seconds,
                 'tokens_per_sec': sum(t for _, _, t in self._window) / seconds}
        if self._flops_per_token is not None:
            rates['flops_per_sec'] = rates['tokens_per_sec'] * self._flops_per_token
        metrics = {f'throughput/{name}': value for name, value in rates.items()}
        metrics.update({f'throughput/device/{name}': value / world_size for name, value in rates.items()})
        if self._peak and 'flops_per_sec' in rates:
            metrics['throughput/device/mfu'] = metrics['throughput/device/flops_per_sec'] / self._peak
        return metrics
