"""Read the model weights of checkpoints written by MosaicML Composer (llm-foundry runs), without Composer.

Two layouts exist:
- monolithic `.pt` (torch.save): {'state': {'model': {'model.transformer.wte.weight': tensor, ...}, 'optimizers':
  ..., 'timestamp': ...}, 'rng': [...]}; Composer's HuggingFaceModel wrapper adds the 'model.' prefix;
- sharded DCP folder: the same tree flattened by DCP, so the weights are under 'state.model.model.*'.
Both come back as an MPT state dict ('transformer.wte.weight', ...). Only the weights are migrated: Composer's
optimizer and timestamp layouts are its own.

A `.pt` is a pickle, and unpickling can run any code the file names. It is read with torch's restricted
unpickler (`torch.load(weights_only=True)`), which only rebuilds tensors, storages, numbers, strings and plain
containers; the plain data classes of Composer's checkpoints (`_SAFE_DATA`: numpy arrays and dtypes, timedelta,
TorchVersion) are added as data-only exceptions.
Anything else is refused before unpickling starts, with the offending names in the error.
"""

from __future__ import annotations

import datetime
import io
import pickle

import numpy as np
import torch
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals
from torch.torch_version import TorchVersion

from llmfoundry import storage

from . import dcp_io, layout
from .errors import CheckpointError

MODEL_PREFIX = 'model.'
SHARDED_MODEL_PREFIX = 'state.model.'

# Plain data classes that Composer's checkpoints hold (listed from a real one with get_unsafe_globals_in_checkpoint,
# see tests/fixtures/README.md), each rebuilt from numbers and strings without running any other code:
# numpy arrays pickle as (_reconstruct, ndarray, dtype) (the numpy RNG state); numpy 1 and 2 name _reconstruct
# differently, and numpy 2 rebuilds a dtype through its class (numpy.dtypes.UInt32DType, ...); the timestamp's
# wall-clock fields are datetime.timedelta; the metadata's torch_version is a TorchVersion (a str subclass).
_SAFE_DATA: list = [
    (np._core.multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
    (np._core.multiarray._reconstruct, 'numpy._core.multiarray._reconstruct'),
    np.ndarray,
    np.dtype,
    *(getattr(np.dtypes, name) for name in np.dtypes.__all__),
    datetime.timedelta,
    TorchVersion,
]
_SAFE_NAMES = frozenset(
    entry[1] if isinstance(entry, tuple) else f'{entry.__module__}.{entry.__qualname__}' for entry in _SAFE_DATA
)


def is_composer_checkpoint(path: str) -> bool:
    """A `.pt` file, or a DCP folder whose entries are Composer's ('state.model.*') rather than ours."""
    if path.endswith('.pt'):
        return True
    if not storage.exists(storage.join(path, layout.METADATA)):
        return False
    try:
        keys = layout.read_metadata(path).state_dict_metadata
    except Exception:  # noqa: BLE001 - unreadable metadata is reported by the regular load path
        return False
    return any(key.startswith(SHARDED_MODEL_PREFIX) for key in keys)


def read_model_weights(path: str) -> dict[str, torch.Tensor]:
    """The full (unsharded) model weights of a Composer checkpoint, with MPT's parameter names."""
    if path.endswith('.pt'):
        return _strip(_model_of_monolith(path), MODEL_PREFIX)
    return _strip(_strip(_read_sharded_model(path), SHARDED_MODEL_PREFIX), MODEL_PREFIX)


def restricted_load(path: str) -> object:
    """torch.load of an untrusted `.pt`: tensors, plain containers and `_SAFE_DATA` only; any other class is refused."""
    blob = _read_bytes(path)
    try:
        unsafe = sorted(set(get_unsafe_globals_in_checkpoint(io.BytesIO(blob))) - _SAFE_NAMES)
        if unsafe:
            raise CheckpointError(
                f'refusing to unpickle {path}: it references {", ".join(unsafe)}, and a checkpoint should hold only '
                'tensors, numbers, strings and containers (unpickling other classes can run arbitrary code).'
            )
        with safe_globals(_SAFE_DATA):
            return torch.load(io.BytesIO(blob), map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"refusing to unpickle {path}: torch's restricted unpickler rejects it ({err})") from err


def _read_bytes(path: str) -> bytes:
    if not storage.exists(path):
        raise CheckpointError(f'Composer checkpoint {path} does not exist.')
    return storage.read_bytes(path)


def _model_of_monolith(path: str) -> dict[str, torch.Tensor]:
    checkpoint = restricted_load(path)
    try:
        model = checkpoint['state']['model']
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a Composer checkpoint: no ['state']['model'] entry.") from err
    return {key: value for key, value in model.items() if isinstance(value, torch.Tensor)}


def _read_sharded_model(path: str) -> dict[str, torch.Tensor]:
    """Every 'state.model.*' tensor of a Composer DCP folder, read whole by this process alone."""
    metadata = layout.read_metadata(path)
    template = {
        key: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in metadata.state_dict_metadata.items()
        if key.startswith(SHARDED_MODEL_PREFIX) and isinstance(meta, TensorStorageMetadata)
    }
    if not template:
        raise CheckpointError(f'{path} holds no model tensors under {SHARDED_MODEL_PREFIX!r}.')
    # no_dist: each rank reads the full weights on its own; set_model_state_dict then keeps its shard.
    dcp_io.load(template, path, DefaultLoadPlanner(allow_partial_load=True), alone=True)
    return template


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key.removeprefix(prefix): value for key, value in state.items()}
