"""When a run saves: at every save_interval crossing and once at the end of training; a diverged run's state
only on request, under a name autoresume never picks."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.time import Time, Timestamp, crossed
from llmfoundry.interfaces import TrainState

from .checkpointer import CheckpointParts, SaveSettings, save

log = logging.getLogger(__name__)


class CheckpointSaver:
    """Saves at every save_interval crossing and once at the end of training (never twice for one timestamp)."""

    def __init__(self, config: TrainConfig, run_name: str, config_text: str) -> None:
        self.settings = SaveSettings.from_config(config, run_name)
        self.interval = Time.parse(config.save_interval, 'save_interval')
        self.config_text = config_text
        self.last_saved: Timestamp | None = None
        self.last_path: str | None = None  # the newest checkpoint of this run (for the final summary)

    def after_step(self, previous: Timestamp, state: TrainState, loader: Any) -> None:
        if not state.diverged and crossed(previous, state.timestamp, self.interval, state.max_duration):
            self.save(state, loader)

    def save(self, state: TrainState, loader: Any) -> None:
        """Save and repoint `latest` (never for a diverged state: see save_diverged)."""
        if state.diverged:
            raise RuntimeError('a diverged state must not become the latest checkpoint; use save_diverged.')
        if self.last_saved == state.timestamp:
            return
        self.last_path = self._write(self.settings, state, loader)
        self.last_saved = state.timestamp
        log.info('Saved checkpoint %s', self.last_path)

    def save_diverged(self, state: TrainState, loader: Any) -> str:
        """Save a diverged state as diverged-<name> (for inspection through load_path); `latest` stays put."""
        path = self._write(dataclasses.replace(self.settings, diverged=True), state, loader)
        log.warning('Saved the diverged state to %s (save_on_divergence); autoresume never picks it', path)
        return path

    def _write(self, settings: SaveSettings, state: TrainState, loader: Any) -> str:
        parts = CheckpointParts(
            model=state.model, optimizer=state.optimizer, timestamp=state.timestamp,
            loader_state=loader.state_dict(), config_text=self.config_text,
        )
        return save(settings, parts, rank=state.dist.rank, world_size=state.dist.world_size)
