"""nan_monitor: stop the run at the first batch whose loss is NaN or infinite.

A non-finite loss poisons the weights through the optimizer step, and every later batch only burns
compute, so the run stops (cleanly, after the batch, on every rank alike: the loss is already
reduced across ranks) with a message saying what happened and what to try. The stop is a divergence:
the run exits with an error and its state never becomes the `latest` checkpoint (see save_on_divergence). It is
judged in after_train_batch, before any callback's batch_end, so no export sees the batch as healthy.
"""

from __future__ import annotations

import logging
import math

from llmfoundry.interfaces import Callback, MetricLogger, TrainState

log = logging.getLogger(__name__)


class NaNMonitor(Callback):
    def after_train_batch(self, state: TrainState, logger: MetricLogger) -> None:
        if math.isfinite(state.loss):
            return
        reason = (f'nan_monitor: the training loss is {state.loss} at batch {state.timestamp.batch}; the run '
                  'has diverged. Resume from an earlier checkpoint with a lower learning rate, longer warmup or '
                  'gradient clipping (algorithms.gradient_clipping).')
        log.error(reason)
        state.request_stop(reason, diverged=True)
