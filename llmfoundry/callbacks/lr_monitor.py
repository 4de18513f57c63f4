"""lr_monitor: the learning rate of every parameter group, as `lr-<OptimizerClass>/group<i>` (Composer's names).

Logged at batch end: the scheduler set the rates before the batch, so these are the rates the
optimizer step just used.
"""

from __future__ import annotations

from llmfoundry.interfaces import Callback, MetricLogger, TrainState


class LRMonitor(Callback):
    def batch_end(self, state: TrainState, logger: MetricLogger) -> None:
        name = type(state.optimizer).__name__
        metrics = {f'lr-{name}/group{i}': float(group['lr']) for i, group in enumerate(state.optimizer.param_groups)}
        logger.log(metrics, state.timestamp)
