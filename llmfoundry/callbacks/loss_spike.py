"""loss_spike: stop the run when the loss stays far above its recent mean (a divergence, not noise).

A single high batch is normal (a hard or corrupt batch); a loss above `threshold` x the running mean
of the last `window_size` normal batches for `patience` consecutive batches means training has
diverged, and continuing wastes compute. Spiking batches are kept out of the running mean so that a
spike cannot raise its own bar. Judging starts once the window is full. Non-finite losses are left
to nan_monitor. The loss is already reduced across ranks, so every rank stops at the same batch. The stop is
a divergence (an error exit; the state is not saved as `latest`), judged in after_train_batch so that no
batch_end exports it. Checkpoints saved during the `patience` spiking batches stay: the restart that rolls back
to the checkpoint before the first spike is in docs/MULTINODE.md (Divergence).
"""

from __future__ import annotations

import logging
import math
from collections import deque

from llmfoundry.interfaces import Callback, MetricLogger, TrainState

log = logging.getLogger(__name__)


class LossSpike(Callback):
    def __init__(self, window_size: int = 100, threshold: float = 5.0, patience: int = 4) -> None:
        if window_size < 1 or patience < 1 or threshold <= 1:
            raise ValueError('loss_spike needs window_size >= 1, patience >= 1 and threshold > 1; got '
                             f'window_size={window_size}, patience={patience}, threshold={threshold}.')
        self.window_size = window_size
        self.threshold = threshold
        self.patience = patience
        self._window: deque[float] = deque(maxlen=window_size)
        self._spikes = 0

    def after_train_batch(self, state: TrainState, logger: MetricLogger) -> None:
        loss = state.loss
        if not math.isfinite(loss):
            return
        if len(self._window) < self.window_size:
            self._window.append(loss)
            return
        mean = sum(self._window) / len(self._window)
        if loss <= self.threshold * mean:
            self._window.append(loss)
            self._spikes = 0
            return
        self._spikes += 1
        log.warning('loss_spike: batch %d loss %.4f is above %g x the running mean %.4f (%d/%d)',
                    state.timestamp.batch, loss, self.threshold, mean, self._spikes, self.patience)
        if self._spikes >= self.patience:
            reason = (f'loss_spike: the training loss stayed above {self.threshold:g} x its running mean '
                      f'({mean:.4f} over {self.window_size} batches) for {self.patience} consecutive batches, '
                      f'up to batch {state.timestamp.batch} (loss {loss:.4f}); the run has diverged. Resume from '
                      'an earlier checkpoint with a lower learning rate or gradient clipping.')
            log.error(reason)
            state.request_stop(reason, diverged=True)
