"""A hand-built TrainState, a recording logger and a fake clock, so callbacks run without a training loop."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.time import Time
from llmfoundry.interfaces import DistInfo, LoggerDestination, TrainState


class Recorder(LoggerDestination):
    def __init__(self) -> None:
        self.events: list[tuple[dict[str, float], int]] = []  # (metrics, batch)

    def log_metrics(self, metrics, timestamp) -> None:
        self.events.append((dict(metrics), timestamp.batch))

    def merged(self) -> dict[str, float]:
        """Every metric's last value."""
        return {name: value for metrics, _ in self.events for name, value in metrics.items()}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_state(run_folder: Path, model: nn.Module | None = None, *, max_duration: str = '10ba',
               precision: str = 'fp32', device: str = 'cpu', world_size: int = 1, rank: int = 0,
               max_seq_len: int = 8) -> TrainState:
    config = TrainConfig(model={}, tokenizer={}, optimizer={}, scheduler={}, train_loader={},
                         max_duration=max_duration, max_seq_len=max_seq_len, global_train_batch_size=4,
                         precision=precision)
    model = model or nn.Linear(3, 2)
    return TrainState(config=config, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                      dist=DistInfo(rank=rank, world_size=world_size, local_rank=rank, device=torch.device(device)),
                      max_duration=Time.parse(max_duration), run_name='test-run', run_folder=run_folder,
                      device_train_batch_size=4, microbatch_size=4)


def finish_batch(state: TrainState, samples: int = 4, tokens: int = 32, loss: float = 1.0) -> None:
    """What the trainer sets before batch_end."""
    state.loss, state.batch_samples, state.batch_tokens = loss, samples, tokens
    state.timestamp = state.timestamp.after_batch(samples=samples, tokens=tokens)

