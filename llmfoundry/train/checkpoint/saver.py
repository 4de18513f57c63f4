"""When a run saves: at every save_interval crossing and once at the end of training."""

from __future__ import annotations

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
        if crossed(previous, state.timestamp, self.interval, state.max_duration):
            self.save(state, loader)

    def save(self, state: TrainState, loader: Any) -> None:
        if self.last_saved == state.timestamp:
            return
        parts = CheckpointParts(
            model=state.model, optimizer=state.optimizer, timestamp=state.timestamp,
            loader_state=loader.state_dict(), config_text=self.config_text,
        )
        path = save(self.settings, parts, rank=state.dist.rank, world_size=state.dist.world_size)
        self.last_saved, self.last_path = state.timestamp, path
        log.info('Saved checkpoint %s', path)
