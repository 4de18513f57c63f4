"""early_stopper: stop training when an evaluation metric has not improved for `patience` (Composer's callback keys).

    callbacks:
      early_stopper: {monitor: LanguageCrossEntropy, dataloader_label: eval, patience: 500ba, min_delta: 0.01}

After every evaluation the metric named `monitor` of the loader or task `dataloader_label` is compared with the best
value so far: `eval` is the eval loader (`metrics/eval/<monitor>`), a label of several eval loaders
`metrics/eval/<label>/<monitor>`, an ICL task label `metrics/<label>/<monitor>`. A value improves on the best when
it is better by more than `min_delta`; lower is better for names with loss, error, perplexity or crossentropy in
them (Composer's rule misses LanguageCrossEntropy), higher for any other, unless `comp` says (`lt`, `le`, `gt`,
`ge`). Once the best is older than `patience` (a time string; a bare integer counts epochs, as in Composer), the run
stops after the batch like any stop request: a final checkpoint and a normal exit. Evaluation metrics are reduced
across ranks, so every rank stops at the same batch.

The stopper's memory is not checkpointed: a restart (autoresume) of a stopped run continues training toward
max_duration and judges from its first evaluation on. Training metrics (`dataloader_label: train`) are not
supported: they are computed only for the batches that log them.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable

from llmfoundry.config.time import Time, Timestamp, TimeUnit, to_units_of
from llmfoundry.interfaces import Callback, MetricLogger, TrainState

log = logging.getLogger(__name__)

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    'lt': operator.lt, 'le': operator.le, 'gt': operator.gt, 'ge': operator.ge,
    'less': operator.lt, 'less_equal': operator.le, 'greater': operator.gt, 'greater_equal': operator.ge,
}  # fmt: skip
LOWER_IS_BETTER = ('loss', 'error', 'perplexity', 'crossentropy')


class EarlyStopper(Callback):
    def __init__(self, monitor: str, dataloader_label: str, comp: str | None = None, min_delta: float = 0.0,
                 patience: int | str = 1) -> None:
        if dataloader_label == 'train':
            raise ValueError('early_stopper: dataloader_label: train is not supported (training metrics are computed '
                             'only for logged batches); monitor an evaluation metric, e.g. dataloader_label: eval.')
        if comp is None:
            comp = 'lt' if any(word in monitor.lower() for word in LOWER_IS_BETTER) else 'gt'
        if comp not in COMPARISONS:
            raise ValueError(f'early_stopper.comp={comp!r} is not one of {", ".join(COMPARISONS)}.')
        self.monitor = monitor
        self.dataloader_label = dataloader_label
        self.better = COMPARISONS[comp]
        self.min_delta = abs(min_delta)
        if isinstance(patience, int) and patience < 0:
            raise ValueError(f'early_stopper.patience={patience} must be >= 0 (epochs, or a time string).')
        self.patience = Time(patience, TimeUnit.EPOCH) if isinstance(patience, int) else Time.parse(
            patience, 'early_stopper.patience')
        self.best: float | None = None
        self.best_at: Timestamp | None = None

    def metric_names(self) -> list[str]:
        """Where the monitored value can be logged, in the order looked up."""
        label, name = self.dataloader_label, self.monitor
        return [f'metrics/{label}/{name}', f'metrics/eval/{label}/{name}']

    def eval_end(self, state: TrainState, logger: MetricLogger, metrics: dict[str, float]) -> None:
        name = next((key for key in self.metric_names() if key in metrics), None)
        if name is None:
            raise ValueError(f'early_stopper: this evaluation logged none of {", ".join(self.metric_names())}; set '
                             f'monitor and dataloader_label to one of: {", ".join(sorted(metrics))}.')
        value, now = float(metrics[name]), state.timestamp
        if self.best is None or (self.better(value, self.best) and abs(value - self.best) > self.min_delta):
            self.best, self.best_at = value, now
            return
        patience = to_units_of(self.patience, state.max_duration)
        waited = now.get(patience.unit) - self.best_at.get(patience.unit)
        if waited > patience.value:
            reason = (f'early_stopper: {name} has not improved on its best, {self.best:.6g} at batch '
                      f'{self.best_at.batch}, for {waited}{patience.unit.value} (patience {patience}).')
            log.warning(reason)
            state.request_stop(reason)
