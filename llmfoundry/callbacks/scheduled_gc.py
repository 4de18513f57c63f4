"""scheduled_gc: Python's garbage collector runs on a schedule instead of whenever allocations trigger it.

Python's cyclic collector starts a collection every few hundred object allocations, and a training step allocates
thousands of short-lived Python objects (autograd nodes, tensor wrappers), so collections land at random points of
random steps, and each one on one rank holds up every other rank at the step's next collective. This callback turns
automatic collection off for the training loop and collects at fixed batches instead, the same batch on every rank:
a generation-1 collection (the young objects: cheap) every `gen_1_batch_interval` batches and a full collection every
`batch_interval` batches (on CUDA also returning the allocator's cached blocks, as llm-foundry's callback does).
Evaluation runs with automatic collection back on unless `eval_keep_disabled`. When the run ends, normally or by an
error, automatic collection is back as it was.

    callbacks:
      scheduled_gc: {batch_interval: 1000, gen_1_batch_interval: 50}

The cost: reference cycles made during training live until the next scheduled collection; keep
`gen_1_batch_interval` small when callbacks or model code build cycles that hold large tensors.
"""

from __future__ import annotations

import gc

import torch

from llmfoundry.interfaces import Callback, MetricLogger, TrainState


class ScheduledGarbageCollector(Callback):
    def __init__(self, batch_interval: int, gen_1_batch_interval: int | None = None,
                 eval_keep_disabled: bool = False) -> None:
        for key, value in (('batch_interval', batch_interval), ('gen_1_batch_interval', gen_1_batch_interval)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f'scheduled_gc.{key} must be a whole number of batches >= 1, got {value!r}.')
        self.batch_interval = batch_interval
        self.gen_1_batch_interval = gen_1_batch_interval
        self.eval_keep_disabled = eval_keep_disabled
        self.was_enabled: bool | None = None  # automatic collection before fit_start; None outside a run

    def fit_start(self, state: TrainState, logger: MetricLogger) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()
        collect_all(state.dist.device)  # setup's garbage, so the first interval starts clean

    def batch_end(self, state: TrainState, logger: MetricLogger) -> None:
        batch = state.timestamp.batch
        if batch % self.batch_interval == 0:
            collect_all(state.dist.device)
        elif self.gen_1_batch_interval and batch % self.gen_1_batch_interval == 0:
            gc.collect(1)

    def eval_start(self, state: TrainState, logger: MetricLogger) -> None:
        if not self.eval_keep_disabled and self.was_enabled is not None:
            gc.enable()

    def eval_end(self, state: TrainState, logger: MetricLogger, metrics: dict[str, float]) -> None:
        if not self.eval_keep_disabled and self.was_enabled is not None:
            gc.disable()

    def fit_end(self, state: TrainState, logger: MetricLogger) -> None:
        collect_all(state.dist.device)

    def close(self, state: TrainState, logger: MetricLogger) -> None:
        if self.was_enabled:
            gc.enable()
        self.was_enabled = None


def collect_all(device: torch.device) -> None:
    """A full collection; on CUDA the caching allocator then gives its unused blocks back to the driver."""
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
