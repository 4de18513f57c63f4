"""optimizer_monitor: gradient L2 norms (global and per parameter), with Composer's metric names.

Norms are taken at `before_optimizer_step`, where gradients are complete (reduced across ranks and
unscaled) and not yet clipped, so `l2_norm/grad/global` is the norm that clipping compares with its
threshold. The trainer frees gradients right after the step, so they are measured there and logged at
the batch's end, every `batch_log_interval` batches. With `log_optimizer_metrics`, parameter norms
(`l2_norm/param/<name>`) are logged too, and for Adam-style optimizers the norm of the first moment
as it stands before this step's update (`l2_norm/moment/<name>`) and its cosine similarity with the new
gradient (`cosine/moment_grad/<name>`): gradients that turn against their own running average flag
an unstable layer before the loss shows it.
"""

from __future__ import annotations

import torch

from llmfoundry.interfaces import Callback, MetricLogger, TrainState


def _norms(named: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f'{prefix}/{name}': torch.linalg.vector_norm(t.detach().float()) for name, t in named.items()}


class OptimizerMonitor(Callback):
    def __init__(self, log_optimizer_metrics: bool = True, batch_log_interval: int = 10) -> None:
        if batch_log_interval < 1:
            raise ValueError(f'optimizer_monitor.batch_log_interval must be at least 1, got {batch_log_interval}.')
        self.log_optimizer_metrics = log_optimizer_metrics
        self.batch_log_interval = batch_log_interval
        self._pending: dict[str, float] = {}

    def before_optimizer_step(self, state: TrainState, logger: MetricLogger) -> None:
        if (state.timestamp.batch + 1) % self.batch_log_interval != 0:  # the batch being trained
            return
        params = {name: p for name, p in state.model.named_parameters() if p.grad is not None}
        grads = {name: p.grad for name, p in params.items()}
        norms = _norms(grads, 'l2_norm/grad')
        if not norms:
            return
        norms['l2_norm/grad/global'] = torch.linalg.vector_norm(torch.stack(list(norms.values())))
        if self.log_optimizer_metrics:
            norms.update(_norms(params, 'l2_norm/param'))
            norms.update(self._moment_metrics(state, params, grads))
        values = torch.stack([v.to(torch.float64) for v in norms.values()]).tolist()  # one device sync
        self._pending = dict(zip(norms, values))

    @staticmethod
    def _moment_metrics(state: TrainState, params: dict[str, torch.Tensor],
                        grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        metrics = {}
        for name, param in params.items():
            moment = state.optimizer.state.get(param, {}).get('exp_avg')
            if moment is None:
                continue
            moment, grad = moment.detach().float().flatten(), grads[name].detach().float().flatten()
            metrics[f'l2_norm/moment/{name}'] = torch.linalg.vector_norm(moment)
            metrics[f'cosine/moment_grad/{name}'] = torch.nn.functional.cosine_similarity(moment, grad, dim=0)
        return metrics

    def batch_end(self, state: TrainState, logger: MetricLogger) -> None:
        if self._pending:
            logger.log(self._pending, state.timestamp)
            self._pending = {}
