"""Where a training step's time goes: `time/<phase>` metrics, seconds per batch averaged since the last log.

  time/data_wait         waiting for the train loader's next batch (and moving it to the device)
  time/forward_backward  forward and backward of every microbatch; with DDP and FSDP2 this includes the gradient
                         reduction (and FSDP2's all-gathers / reduce-scatters), which overlap backward and so
                         cannot be told apart from it
  time/optimizer         gradient clipping, the optimizer step and zero_grad
  time/communication     the trainer's own collectives: the batch's token counts before backward, and the summed
                         loss / stop vote after the step (it waits for the slowest rank, so imbalance shows here)
  time/logging           train metrics (their all-reduce included), the batch_end callbacks and the loggers

Always on: the CPU phases read `time.perf_counter`; on CUDA the device phases (forward_backward, optimizer,
communication) record CUDA events instead, read only when the metrics are logged, after the step's own
synchronisation (the loss `.item()`); timing never waits for the device: a pair of events the device has not reached
yet (at most the last one, recorded just after that synchronisation) is counted at the next log. Evaluation and
checkpoints are not counted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

PHASES = ('data_wait', 'forward_backward', 'optimizer', 'communication', 'logging')
DEVICE_PHASES = ('forward_backward', 'optimizer', 'communication')


class StepTimer:
    """Sums each phase's time over the batches since the last `metrics()` call."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == 'cuda'
        self._seconds = dict.fromkeys(PHASES, 0.0)
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
        self._batches = 0

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the time spent inside the block as `name` (one of PHASES)."""
        if name not in self._seconds:
            raise ValueError(f'unknown step phase {name!r}; phases: {", ".join(PHASES)}.')
        if self._cuda and name in DEVICE_PHASES:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((name, start, end))
            return
        began = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] += time.perf_counter() - began

    def batch_done(self) -> None:
        self._batches += 1

    def metrics(self) -> dict[str, float]:
        """`time/<phase>`: mean seconds per batch since the last call (then starts over); empty before a batch."""
        pending = []
        for name, start, end in self._events:
            if end.query():
                self._seconds[name] += start.elapsed_time(end) / 1000
            else:
                pending.append((name, start, end))
        self._events = pending
        batches, self._batches = self._batches, 0
        seconds, self._seconds = self._seconds, dict.fromkeys(PHASES, 0.0)
        if not batches:
            return {}
        return {f'time/{name}': total / batches for name, total in seconds.items()}
