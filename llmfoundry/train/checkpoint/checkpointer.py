"""Save and load sharded training checkpoints with torch.distributed.checkpoint (DCP).

What a checkpoint holds (DCP keys):
    model            the model's state dict from `get_state_dict` (DTensor shards under FSDP2, plain tensors otherwise)
    optim            the optimizer's state dict keyed by parameter name (absent with save_weights_only)
    timestamp        packed dict of llmfoundry's Timestamp                                  (written by rank 0)
    loader           packed data loader state; it must describe the *global* position      (written by rank 0)
    config           packed resolved config text                                           (written by rank 0)
    rng/rank{r}      packed generator states of rank r                                     (written by rank r)
save_ignore_keys leaves out what its Composer paths name (ignore_keys.py): weights, optim, timestamp, loader, rng.
A model with a LoRA adapter (model.peft_config) loads a checkpoint without adapter weights (the pretraining run it
finetunes) as weights only: each base weight from its name without the adapter, the adapter kept at its init, no
optimizer state, timestamp or data loader position (they belong to another run).
With fsdp_config.state_dict_type: full the folder also holds `model.safetensors`: the unsharded weights, gathered
from every rank and written by rank 0 before `.complete`, for tools that read plain weight files (no DCP).
"Packed" entries are torch.save bytes read back with torch.load(weights_only=True): DCP itself would unpickle
arbitrary objects, and a nested dict handed to DCP is flattened so that loading it would need its shape in
advance. DCP keeps one copy of a non-tensor entry that several ranks save under one key, hence RNG states
are keyed by rank and the global entries come from rank 0 alone.

Atomicity: every rank writes its files, DCP's coordinator writes `.metadata`, all ranks meet at a barrier,
then rank 0 checks the folder (`layout.problems`) and only then writes `.complete` and repoints `latest`.
Collective decisions (refuse to overwrite, the check) are taken by rank 0 and broadcast, so every rank
raises the same error instead of some ranks waiting forever.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from safetensors.torch import save as safetensors_save
from torch import nn
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.optim import Optimizer

from llmfoundry import storage
from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.time import Timestamp
from llmfoundry.config.validation import ConfigError
from llmfoundry.models.peft_adapter import base_name, has_adapter, is_adapter_parameter, under_adapted_names

from . import composer, dcp_io, formats, layout, rng
from .errors import CheckpointError
from .ignore_keys import Ignored
from .ignore_keys import resolve as resolve_ignore_keys

T = TypeVar('T')
log = logging.getLogger(__name__)

STATE_DICT_TYPES = ('sharded', 'full')
CONSOLIDATED_FILE = 'model.safetensors'


@dataclass(frozen=True)
class SaveSettings:
    """Where and how to save; `from_config` maps llm-foundry's save_* keys."""

    save_folder: str  # {run_name} already filled in
    save_filename: str = 'ep{epoch}-ba{batch}'
    num_to_keep: int = -1  # -1 keeps all; N >= 1 deletes the oldest complete checkpoints beyond N
    overwrite: bool = False
    weights_only: bool = False
    run_name: str = ''
    consolidated: bool = False  # also write the full weights as model.safetensors (state_dict_type: full)
    ignore_keys: tuple[str, ...] = ()  # Composer paths left out of the checkpoint (save_ignore_keys, ignore_keys.py)
    diverged: bool = False  # a diverged run's state: named diverged-<name>, never `latest`, never pruned

    def __post_init__(self) -> None:
        if self.num_to_keep != -1 and self.num_to_keep < 1:
            raise CheckpointError(
                f'save_num_checkpoints_to_keep={self.num_to_keep}: use -1 (keep all) or a positive number; '
                'a sharded checkpoint is only ever written to save_folder, so 0 would keep nothing.'
            )

    @classmethod
    def from_config(cls, config: TrainConfig, run_name: str) -> SaveSettings:
        if not config.save_folder:
            raise CheckpointError('saving checkpoints needs save_folder.')
        return cls(
            save_folder=layout.resolve_folder(config.save_folder, run_name), save_filename=config.save_filename,
            num_to_keep=config.save_num_checkpoints_to_keep, overwrite=config.save_overwrite,
            weights_only=config.save_weights_only, run_name=run_name, consolidated=_wants_consolidated(config),
            ignore_keys=tuple(config.save_ignore_keys or ()),
        )  # fmt: skip


def _wants_consolidated(config: TrainConfig) -> bool:
    """fsdp_config.state_dict_type: 'sharded' (DCP only) or 'full' (DCP plus model.safetensors)."""
    kind = config.fsdp_config.state_dict_type if config.fsdp_config else 'sharded'
    if kind not in STATE_DICT_TYPES:
        raise ConfigError(f'fsdp_config.state_dict_type={kind!r} is invalid; allowed: {", ".join(STATE_DICT_TYPES)} '
                          "('full' also writes model.safetensors into each checkpoint folder).")
    return kind == 'full'


@dataclass
class CheckpointParts:
    """What the trainer hands to `save`."""

    model: nn.Module
    optimizer: Optimizer | None = None
    timestamp: Timestamp = field(default_factory=Timestamp)
    loader_state: dict[str, Any] | None = None  # tensors, numbers, strings and containers only
    config_text: str | None = None


@dataclass
class Restored:
    """What `load` brings back besides the weights and optimizer state it writes into the objects passed."""

    path: str
    timestamp: Timestamp | None = None  # None for a weights-only load
    loader_state: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None  # this rank's states; None when weights only or saved by another world size
    config_text: str | None = None
    saved_world_size: int | None = None

    def restore_rng(self, seed: int, rank: int) -> None:
        """Put this rank's generators back, or reseed from (seed, rank, batch) when no state applies (see rng.py)."""
        if self.rng is not None:
            rng.restore(self.rng)
        else:
            rng.reseed(seed, rank, self.timestamp.batch if self.timestamp else 0)


def save(settings: SaveSettings, parts: CheckpointParts, *, rank: int, world_size: int) -> str:
    """Write a checkpoint of `parts` (every rank calls this) and return its folder once it is complete."""
    name = layout.folder_name(settings.save_filename, parts.timestamp, settings.run_name)
    if settings.diverged:
        name = layout.DIVERGED_PREFIX + name
    path = storage.join(settings.save_folder, name)
    _agreed(lambda: _clear_target(path, settings.overwrite), rank, world_size)
    state = _state_to_save(parts, settings.weights_only, rank, settings.ignore_keys)
    dcp_io.save(state, path)
    if settings.consolidated:
        _write_consolidated(parts.model, path, rank, world_size)
    if world_size > 1:
        dist.barrier()
    _agreed(lambda: _finish(settings, name, parts.timestamp, world_size), rank, world_size)
    return path


def load(
    path: str, model: nn.Module, optimizer: Optimizer | None = None, *, weights_only: bool = False,
    strict: bool = True, rank: int = 0, world_size: int = 1, ignore_keys: Sequence[str] = (),
) -> Restored:  # fmt: skip
    """Load a checkpoint folder (ours or Composer's) or a Composer `.pt` into `model` (and `optimizer`).

    Works on any world size: DCP reshards model and optimizer state to the current sharding. `strict=False`
    tolerates model parameters missing from the checkpoint (load_strict_model_weights). `ignore_keys`: Composer
    paths of what to leave out (load_ignore_keys, ignore_keys.py).
    """
    ignored = Ignored()
    if ignore_keys:
        ignored = resolve_ignore_keys(ignore_keys, get_model_state_dict(model), type(optimizer).__name__)
    marker = formats.check_readable(path)
    if marker is None:
        return _load_composer(path, model, weights_only=weights_only, strict=strict, skip=ignored.weights)
    saved_keys = set(layout.read_metadata(path).state_dict_metadata)
    if _base_into_adapter(model, saved_keys):
        _load_base_weights(path, model, strict=strict, skip=ignored.weights)
        return Restored(path=path, saved_world_size=marker['world_size'])
    if marker['weights_only'] and not weights_only:
        raise CheckpointError(f'checkpoint {path} holds model weights only; load it with load_weights_only: true.')
    with_optimizer = optimizer is not None and not weights_only and 'optim' not in ignored.parts
    if with_optimizer and not any(key.startswith('optim.') for key in saved_keys):
        log.warning('%s holds no optimizer state (saved with save_ignore_keys): the optimizer starts fresh.', path)
        with_optimizer = False
    if with_optimizer:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state: dict[str, Any] = {'model': model_sd, 'optim': optim_sd}
    else:
        state = {'model': get_model_state_dict(model)}
    kept = {name: state['model'].pop(name) for name in ignored.weights}  # not read: they keep the model's values
    missing = [name for name in state['model'] if f'model.{name}' not in saved_keys]
    if strict and missing:
        raise CheckpointError(f'{path} lacks the weights {", ".join(missing)}; set load_strict_model_weights: false '
                              'to keep their init, or leave them out with load_ignore_keys.')
    same_world = marker['world_size'] == world_size
    packed = [] if weights_only else ['timestamp', 'loader', 'config'] + ([f'rng/rank{rank}'] if same_world else [])
    for key in packed:
        if key in saved_keys and key.split('/')[0] not in ignored.parts:
            state[key] = b''  # a placeholder DCP replaces with the stored bytes
    dcp_io.load(state, path, DefaultLoadPlanner(allow_partial_load=not strict))
    state['model'].update(kept)
    options = StateDictOptions(strict=strict)
    if with_optimizer:
        set_state_dict(model, optimizer, model_state_dict=state['model'], optim_state_dict=state['optim'],
                       options=options)
    else:
        set_model_state_dict(model, state['model'], options=options)
    restored = Restored(path=path, saved_world_size=marker['world_size'])
    if 'timestamp' in state:
        restored.timestamp = Timestamp(**_unpack(state['timestamp']))
    if 'loader' in state:
        restored.loader_state = _unpack(state['loader'])
    if 'config' in state:
        restored.config_text = _unpack(state['config'])
    if f'rng/rank{rank}' in state:
        restored.rng = _unpack(state[f'rng/rank{rank}'])
    return restored


def read_config_text(path: str) -> str | None:
    """The resolved training config stored in our checkpoint folder (None when it was saved without one).

    Read alone, without the model: tools such as `llmfoundry convert` need the config to build the model first.
    """
    if 'config' not in layout.read_metadata(path).state_dict_metadata:
        return None
    state: dict[str, Any] = {'config': b''}
    dcp_io.load(state, path, DefaultLoadPlanner(allow_partial_load=True), alone=True)
    return _unpack(state['config'])


def find_latest(save_folder: str, *, rank: int = 0, world_size: int = 1) -> str | None:
    """The newest complete checkpoint under save_folder (for autoresume), or None when there is none.

    Follows `latest`; when it is missing or names a folder that is incomplete or damaged, falls back to the
    newest folder that is, with a warning for each folder passed over. Rank 0 decides for every rank.
    """
    return _agreed(lambda: newest_complete(save_folder), rank, world_size)


def newest_complete(save_folder: str) -> str | None:
    """find_latest's choice, made by this process alone (no collective): for checks before a run starts."""
    pointer = storage.join(save_folder, layout.LATEST)
    named = storage.read_text(pointer).strip() if storage.exists(pointer) else None
    marked = layout.marked_checkpoints(save_folder)
    marked_names = {name for name, _ in marked}
    for name in layout.resumable_folders(save_folder):
        if name not in marked_names:
            warnings.warn(f'autoresume: skipping {storage.join(save_folder, name)}: no {layout.COMPLETE} marker '
                          '(an interrupted save)', stacklevel=3)
    candidates = [name for name, _ in reversed(marked)]
    if named in marked_names:
        candidates.remove(named)
        candidates.insert(0, named)
    for name in candidates:
        path = storage.join(save_folder, name)
        found = layout.problems(path)
        if not found:
            if named is not None and name != named:
                warnings.warn(f"autoresume: '{layout.LATEST}' names {named!r}, which is not a usable checkpoint; "
                              f'resuming from {path} instead', stacklevel=3)
            return path
        warnings.warn(f'autoresume: skipping {path}: ' + '; '.join(found), stacklevel=3)
    return None


def _clear_target(path: str, overwrite: bool) -> None:
    """Make room for a new checkpoint at `path`: leftovers of an interrupted save always go, a complete one only
    with save_overwrite (DCP would otherwise mix old and new files)."""
    if not storage.exists(path):
        return
    if layout.read_marker(path) is not None and not overwrite:
        raise CheckpointError(f'checkpoint {path} already exists; set save_overwrite: true to replace it, or choose '
                              'another save_folder / run_name.')
    storage.remove(path)


def _state_to_save(parts: CheckpointParts, weights_only: bool, rank: int, ignore_keys: Sequence[str]) -> dict[str, Any]:
    if weights_only:
        state: dict[str, Any] = {'model': get_model_state_dict(parts.model)}
    elif parts.optimizer is None:
        raise CheckpointError('a full checkpoint needs the optimizer; use save_weights_only for weights alone.')
    else:
        model_sd, optim_sd = get_state_dict(parts.model, parts.optimizer)
        state = {'model': model_sd, 'optim': optim_sd, f'rng/rank{rank}': _pack(rng.capture())}
        if rank == 0:
            state['timestamp'] = _pack(asdict(parts.timestamp))
            if parts.loader_state is not None:
                state['loader'] = _pack(parts.loader_state)
            if parts.config_text is not None:
                state['config'] = _pack(parts.config_text)
    if ignore_keys:
        ignored = resolve_ignore_keys(ignore_keys, state['model'], type(parts.optimizer).__name__, 'save_ignore_keys')
        for name in ignored.weights:
            del state['model'][name]
        for key in [key for key in state if key.split('/')[0] in ignored.parts]:
            del state[key]
    return state


def _write_consolidated(model: nn.Module, path: str, rank: int, world_size: int) -> None:
    """Every rank takes part in gathering the full weights (to CPU, kept on rank 0 only); rank 0 writes them."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def write() -> None:
        # safetensors refuses tensors that share memory, so each is stored on its own.
        tensors = {name: t.detach().contiguous().clone() for name, t in full.items()}
        storage.write_bytes(storage.join(path, CONSOLIDATED_FILE), safetensors_save(tensors, {'format': 'pt'}))

    _agreed(write, rank, world_size)


def _finish(settings: SaveSettings, name: str, timestamp: Timestamp, world_size: int) -> None:
    """Rank 0, after every rank wrote: check, mark complete, repoint `latest`, prune old checkpoints."""
    path = storage.join(settings.save_folder, name)
    found = layout.problems(path)
    if found:
        raise CheckpointError(f'checkpoint {path} is incomplete after saving: ' + '; '.join(found))
    layout.write_marker(path, timestamp, world_size, settings.weights_only, saved_at=time.time())
    if settings.diverged:
        return
    storage.write_text(storage.join(settings.save_folder, layout.LATEST), name)
    if settings.num_to_keep > 0:
        for name, _ in layout.marked_checkpoints(settings.save_folder)[:-settings.num_to_keep]:
            storage.remove(storage.join(settings.save_folder, name))


def _base_into_adapter(model: nn.Module, saved_keys: set[str]) -> bool:
    """Whether `model` has an adapter and the checkpoint (its DCP keys, or a state dict's names) has none."""
    return has_adapter(model) and not any(is_adapter_parameter(key) for key in saved_keys)


def _log_base_load(path: str) -> None:
    log.info('LoRA: %s holds no adapter weights: loading its model weights as the base weights only (weights-only: '
             'the adapter keeps its init; optimizer, timestamp and data loader start fresh).', path)


def _load_base_weights(path: str, model: nn.Module, *, strict: bool, skip: frozenset[str]) -> None:
    """Load the checkpoint's weights into `model`'s base weights, read under their names without the adapter;
    those in `skip` keep their values."""
    _log_base_load(path)
    adapted = get_model_state_dict(model)
    state = {'model': {base_name(name): tensor for name, tensor in adapted.items()
                       if not is_adapter_parameter(name) and name not in skip}}
    dcp_io.load(state, path, DefaultLoadPlanner(allow_partial_load=not strict))
    # the adapter is absent on purpose; a missing base weight was refused by the planner (when strict)
    set_model_state_dict(model, under_adapted_names(state['model'], adapted), options=StateDictOptions(strict=False))


def _load_composer(path: str, model: nn.Module, *, weights_only: bool, strict: bool, skip: frozenset[str]) -> Restored:
    weights = composer.read_model_weights(path)
    names = get_model_state_dict(model).keys()
    adapter_base = _base_into_adapter(model, set(weights))
    if adapter_base:
        _log_base_load(path)
        weights = under_adapted_names(weights, names)
    elif not weights_only:
        warnings.warn(f'{path} is a Composer checkpoint: only the model weights are migrated; optimizer, '
                      'timestamp and data loader start fresh.', stacklevel=3)
    weights = {name: tensor for name, tensor in weights.items() if name not in skip}
    if adapter_base or skip:  # the adapter and the skipped weights are absent on purpose: check the others here
        missing = [name for name in names if name not in weights and name not in skip
                   and not (adapter_base and is_adapter_parameter(name))]
        if strict and missing:
            kind = 'base weights' if adapter_base else 'weights'
            raise CheckpointError(f'{path} lacks the {kind} {", ".join(missing)}; set '
                                  'load_strict_model_weights: false to keep their init.')
        strict = False
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=strict))
    return Restored(path=path)


def _agreed(step: Callable[[], T], rank: int, world_size: int) -> T:
    """Run `step` on rank 0 and give every rank its result, or make every rank raise its error."""
    outcome: list[Any] = [None]
    error: Exception | None = None
    if rank == 0:
        try:
            outcome = [('ok', step())]
        except Exception as err:  # noqa: BLE001 - any failure must reach the other ranks, or they wait forever
            error = err
            outcome = [('error', str(err) if isinstance(err, CheckpointError) else f'{type(err).__name__}: {err}')]
    if world_size > 1:
        dist.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind == 'error':
        raise CheckpointError(value) from error
    return value


def _pack(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _unpack(blob: bytes) -> Any:
    return torch.load(io.BytesIO(blob), weights_only=True)
