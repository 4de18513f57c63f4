"""The trainer's side of checkpoints: when to save (save_interval, end of training) and how a run resumes.

Resuming: with `autoresume: true` the newest complete checkpoint under save_folder wins (a full resume:
weights, optimizer, timestamp, data loader position, RNG); otherwise `load_path` is loaded, fully or, with
`load_weights_only`, as a warm start. The LR schedule needs no state of its own: it is a function of the
restored timestamp.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.time import Time, Timestamp, crossed
from llmfoundry.config.validation import ConfigError

from . import checkpoint
from .checkpoint import layout, storage
from .checkpoint.layout import resolve_folder
from .events import TrainState

log = logging.getLogger(__name__)

class CheckpointSaver:
    """Saves at every save_interval crossing and once at the end of training (never twice for one timestamp)."""

    def __init__(self, config: TrainConfig, run_name: str, config_text: str) -> None:
        self.settings = checkpoint.SaveSettings.from_config(config, run_name)
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
        parts = checkpoint.CheckpointParts(
            model=state.model, optimizer=state.optimizer, timestamp=state.timestamp,
            loader_state=loader.state_dict(), config_text=self.config_text,
        )
        path = checkpoint.save(self.settings, parts, rank=state.dist.rank, world_size=state.dist.world_size)
        self.last_saved, self.last_path = state.timestamp, path
        log.info('Saved checkpoint %s', path)


def resume(config: TrainConfig, state: TrainState, loader: Any) -> str | None:
    """Restore what the config asks for into `state` and `loader`; returns the checkpoint used, if any."""
    rank, world = state.dist.rank, state.dist.world_size
    path, full = None, True
    if config.autoresume and config.save_folder:
        path = checkpoint.find_latest(resolve_folder(config.save_folder, state.run_name), rank=rank, world_size=world)
    if path is None and config.load_path:
        path, full = load_path_for(config.load_path, state), not config.load_weights_only
    if path is None:
        return None
    restored = checkpoint.load(path, state.model, state.optimizer, weights_only=not full,
                               strict=config.load_strict_model_weights, rank=rank, world_size=world)
    if restored.timestamp is not None:
        state.timestamp = restored.timestamp
        if restored.loader_state is not None:
            loader.load_state_dict(restored.loader_state)
        restored.restore_rng(config.seed, rank)
        log.info('Resumed from %s at batch %d', path, state.timestamp.batch)
    else:
        log.info('Loaded weights from %s', path)
    return path


def load_path_for(load_path: str, state: TrainState) -> str:
    """The checkpoint `load_path` names for this run (every rank calls this: the newest is agreed on rank 0)."""
    rank, world = state.dist.rank, state.dist.world_size
    return resolve_load_path(load_path, state.run_name,
                             lambda folder: checkpoint.find_latest(folder, rank=rank, world_size=world))


def resolve_load_path(load_path: str, run_name: str, newest: Callable[[str], str | None]) -> str:
    """load_path with {run_name} filled in; a pointer to the newest checkpoint of a save_folder is resolved
    with `newest`. Such pointers: llm-foundry's `.../latest-rank{rank}.pt` (Composer's per-rank pointer file;
    here one sharded folder serves every rank), `.../latest`, or the save_folder itself."""
    path = load_path.replace('{run_name}', run_name)
    folder, _, name = path.rstrip('/').rpartition('/')
    if name in ('latest-rank{rank}.pt', layout.LATEST):
        return _newest_in(folder or '.', load_path, newest)
    if '{rank}' in path:
        raise ConfigError(f"load_path={load_path!r}: '{{rank}}' is only understood in Composer's "
                          "'latest-rank{rank}.pt'; a checkpoint folder serves every rank.")
    if storage.exists(storage.join(path, layout.LATEST)) and not storage.exists(storage.join(path, layout.METADATA)):
        return _newest_in(path, load_path, newest)
    return path


def _newest_in(folder: str, load_path: str, newest: Callable[[str], str | None]) -> str:
    found = newest(folder)
    if found is None:
        raise ConfigError(f'load_path={load_path!r}: no complete checkpoint in {folder}.')
    return found


def check_load_path(load_path: str, run_name: str) -> None:
    """Before a run builds or writes anything: `load_path` must name a checkpoint `checkpoint.load` can read.
    Checked by each process alone (no collective); the warnings about skipped folders come later, at resume."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            checkpoint.check_readable(resolve_load_path(load_path, run_name, checkpoint.newest_complete))
    except checkpoint.CheckpointError as error:
        raise ConfigError(f'load_path={load_path!r}: {error}') from error
