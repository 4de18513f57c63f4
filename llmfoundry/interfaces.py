"""What plugs into a run implements and receives: the Callback and LoggerDestination interfaces, the run's state
(TrainState, with the process's place in the job, DistInfo) and where metrics go (MetricLogger).

A callback only reacts to events (it never drives the loop); it may ask the run to stop with
`state.request_stop(reason)` (a divergence from after_train_batch, see there). Callbacks run on every rank;
metrics reach the logger destinations from rank 0 only, so a callback that needs a global value reduces it
itself before logging.

This module sits at the bottom of the package (it imports only the config), so callbacks, loggers and the trainer
all build on it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.time import Time, Timestamp


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (rank 0 of 1 without a launcher)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainState:
    config: TrainConfig
    model: nn.Module  # the unwrapped model (no DDP / compile wrapper)
    optimizer: Optimizer
    dist: DistInfo
    max_duration: Time
    run_name: str
    run_folder: Path
    device_train_batch_size: int
    microbatch_size: int
    tokenizer: Any = None
    timestamp: Timestamp = field(default_factory=Timestamp)
    lr_multiplier: float = 0.0
    # About the batch that just finished (set before batch_end):
    loss: float = float('nan')  # mean cross-entropy over the global batch's target tokens
    batch_samples: int = 0  # global
    batch_tokens: int = 0  # global, non-padding
    stop_reason: str | None = None
    diverged: bool = False  # the stop is a divergence: no checkpoint of this state becomes `latest`

    def request_stop(self, reason: str, *, diverged: bool = False) -> None:
        """Stop after the current batch (all ranks agree before the next one starts). `diverged`: the weights are
        no longer worth resuming from (nan_monitor, loss_spike); the run then exits with an error."""
        self.stop_reason = self.stop_reason or reason
        self.diverged = self.diverged or diverged


class LoggerDestination:
    """Where metrics go (console, JSONL file, W&B, ...); called on rank 0 only."""

    def log_hyperparameters(self, config: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], timestamp: Timestamp) -> None:
        pass

    def upload_file(self, path: str, kind: str = 'model') -> None:
        """A file or folder the run wrote (a checkpoint, after it is complete): destinations that store files
        (W&B artifacts with log_artifacts) copy it; the others ignore it."""

    def close(self) -> None:
        pass


class MetricLogger:
    """Fans metrics out to every destination (on rank 0)."""

    def __init__(self, destinations: list[LoggerDestination], is_main: bool) -> None:
        self.destinations = destinations if is_main else []

    def log(self, metrics: dict[str, float], timestamp: Timestamp) -> None:
        for destination in self.destinations:
            destination.log_metrics(metrics, timestamp)

    def log_hyperparameters(self, config: dict[str, Any]) -> None:
        for destination in self.destinations:
            destination.log_hyperparameters(config)

    def upload_file(self, path: str, kind: str = 'model') -> None:
        for destination in self.destinations:
            destination.upload_file(path, kind)

    def close(self) -> None:
        for destination in self.destinations:
            destination.close()


class Callback:
    """Override the events you need. `logger.log(metrics, state.timestamp)` records metrics."""

    def fit_start(self, state: TrainState, logger: MetricLogger) -> None:
        pass

    def batch_start(self, state: TrainState, logger: MetricLogger) -> None:
        pass

    def before_optimizer_step(self, state: TrainState, logger: MetricLogger) -> None:
        """Gradients are complete (reduced across ranks, unscaled) and not yet clipped."""

    def after_train_batch(self, state: TrainState, logger: MetricLogger) -> None:
        """The batch's loss is final (reduced across ranks); before any batch_end. Judge the batch here (e.g.
        `request_stop(reason, diverged=True)`), so that every callback's batch_end, whatever the callbacks' order,
        already sees the verdict: an export at batch_end never writes the weights of a diverging batch."""

    def batch_end(self, state: TrainState, logger: MetricLogger) -> None:
        pass

    def eval_start(self, state: TrainState, logger: MetricLogger) -> None:
        pass

    def eval_end(self, state: TrainState, logger: MetricLogger, metrics: dict[str, float]) -> None:
        pass

    def epoch_end(self, state: TrainState, logger: MetricLogger) -> None:
        pass

    def fit_end(self, state: TrainState, logger: MetricLogger) -> None:
        pass

    def close(self, state: TrainState, logger: MetricLogger) -> None:
        """The run is over, finished or failed (after fit_end, or instead of it on an error): give back what
        fit_start took."""
