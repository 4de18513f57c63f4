"""How a run starts from a checkpoint, and what `load_path` may name.

With `autoresume: true` the newest complete checkpoint under save_folder wins (a full resume: weights, optimizer,
timestamp, data loader position, RNG); otherwise `load_path` is loaded, fully or, with `load_weights_only`, as a
warm start; `load_ignore_keys` leaves parts of it out (ignore_keys.py). The LR schedule needs no state of its own:
it is a function of the restored timestamp. A LoRA run (model.peft_config) given a checkpoint without adapter
weights, such as the pretraining run it finetunes, takes its weights as the base weights only (checkpointer.py). The
optimizer's hyperparameters (lr, betas, weight_decay, ...) are the config's, not the checkpoint's: a restart after a
divergence with a lower `optimizer.lr` trains with that lr.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer

from llmfoundry import storage
from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.validation import ConfigError
from llmfoundry.interfaces import TrainState

from . import layout
from .checkpointer import find_latest, load, newest_complete
from .errors import CheckpointError
from .formats import check_readable, is_run_folder

log = logging.getLogger(__name__)


def resume(config: TrainConfig, state: TrainState, loader: Any) -> str | None:
    """Restore what the config asks for into `state` and `loader`; returns the checkpoint used, if any."""
    rank, world = state.dist.rank, state.dist.world_size
    path, full, ignore_keys = None, True, []
    if config.autoresume and config.save_folder:
        path = find_latest(layout.resolve_folder(config.save_folder, state.run_name), rank=rank, world_size=world)
    if path is None and config.load_path:
        path, full = load_path_for(config.load_path, state), not config.load_weights_only
        ignore_keys = config.load_ignore_keys or []  # not on autoresume: a run restores all of its own state
    if path is None:
        return None
    configured = _hyperparameters(state.optimizer)
    restored = load(path, state.model, state.optimizer, weights_only=not full,
                    strict=config.load_strict_model_weights, rank=rank, world_size=world, ignore_keys=ignore_keys)
    _keep_hyperparameters(state.optimizer, configured)
    if restored.timestamp is not None:
        state.timestamp = restored.timestamp
        if restored.loader_state is not None:
            loader.load_state_dict(restored.loader_state)
        restored.restore_rng(config.seed, rank)
        log.info('Resumed from %s at batch %d', path, state.timestamp.batch)
    else:
        log.info('Loaded weights from %s', path)
    return path


def _hyperparameters(optimizer: Optimizer) -> list[dict[str, Any]]:
    return [{key: value for key, value in group.items() if key != 'params'} for group in optimizer.param_groups]


def _keep_hyperparameters(optimizer: Optimizer, configured: list[dict[str, Any]]) -> None:
    """Put the config's hyperparameters back over those a loaded optimizer state brought (lr is rescheduled anyway)."""
    for group, wanted in zip(optimizer.param_groups, configured, strict=True):
        changed = {key: (group.get(key), value) for key, value in wanted.items()
                   if key != 'lr' and group.get(key) != value}
        if changed:
            log.info('optimizer settings from the config replace the checkpoint\'s: %s',
                     ', '.join(f'{key} {old} -> {new}' for key, (old, new) in changed.items()))
        group.update(wanted)


def load_path_for(load_path: str, state: TrainState) -> str:
    """The checkpoint `load_path` names for this run (every rank calls this: the newest is agreed on rank 0)."""
    rank, world = state.dist.rank, state.dist.world_size
    return resolve_load_path(load_path, state.run_name, lambda folder: find_latest(folder, rank=rank, world_size=world))


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
    if is_run_folder(path) and not storage.exists(storage.join(path, layout.METADATA)):
        return _newest_in(path, load_path, newest)
    return path


def _newest_in(folder: str, load_path: str, newest: Callable[[str], str | None]) -> str:
    found = newest(folder)
    if found is None:
        raise ConfigError(f'load_path={load_path!r}: no complete checkpoint in {folder}.')
    return found


def check_load_path(load_path: str, run_name: str) -> None:
    """Before a run builds or writes anything: `load_path` must name a checkpoint `load` can read.
    Checked by each process alone (no collective); the warnings about skipped folders come later, at resume."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            check_readable(resolve_load_path(load_path, run_name, newest_complete))
    except CheckpointError as error:
        raise ConfigError(f'load_path={load_path!r}: {error}') from error
