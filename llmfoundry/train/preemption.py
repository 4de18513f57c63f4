"""Preemption: SIGTERM or SIGINT asks the run to stop after the current batch, save a checkpoint and exit 0.

The handler only records the signal; the trainer turns it into a stop request that is all-reduced with the
step's other statistics, so every rank stops after the same batch whether one rank or all were signalled
(a launcher forwarding the signal, or SLURM signalling every task).
"""

from __future__ import annotations

import signal
import threading

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """While entered (the training loop), SIGTERM/SIGINT are recorded instead of ending the process."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python only allows handlers there
            self._previous = {sig: signal.signal(sig, self._record) for sig in HANDLED}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _record(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum).name
