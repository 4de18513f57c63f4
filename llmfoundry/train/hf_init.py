"""Fill a meta-built transformers model (models/hf_causal_lm.py, init_device meta / mixed) after sharding.

Every parameter gets only its LOCAL part (the whole tensor without sharding):
  pretrained  each tensor is read from the folder's safetensors with `get_slice`, only this rank's rows, so no rank
              ever holds a second full copy. Names the folder lacks (e.g. a tied lm_head) are looked up under
              the parameter's other names and with / without the base model prefix; what is still missing is
              initialised as below, with one warning (as from_pretrained does).
  otherwise   the model's own `_init_weights` runs on a temporary full-size copy of one unit at a time: a decoder
              layer with its children (GPT-2 rescales c_proj from the layer), or the own parameters of any other
              module; each unit is seeded from the run's seed and its name, so the values do not depend on the
              world size, the sharding or the order. Values `_init_weights` leaves unset are an error.
With a LoRA adapter (models/peft_adapter.py) a base weight is looked up and initialised under its name without
the adapter (`x.base_layer.weight` as `x.weight`; `_init_weights` runs on a copy of the unit without the adapter's
layers), so it gets the value it would have without LoRA. The adapter's weights are read from the saved adapter's
adapter_model.safetensors (`pretrained_lora_id_or_path`) or get peft's init (`init_adapter_shards`, shared with
MPT's meta path in parallel.py).
Buffers were never on the meta device (rotary inv_freq and the like): they keep their values.
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel

from llmfoundry.config.validation import ConfigError
from llmfoundry.models.hf_causal_lm import META_INIT_ATTR, MetaInit, safetensors_index
from llmfoundry.models.mpt.param_init import parameter_seed
from llmfoundry.models.peft_adapter import (
    adapter_file_key,
    base_name,
    check_meta_init,
    has_adapter,
    initial_adapter_value,
    is_adapter_parameter,
)

log = logging.getLogger(__name__)

# Prefixes that wrappers add to names; weights and seeds are keyed by the unwrapped model's names.
WRAPPER_PREFIXES = ('_checkpoint_wrapped_module.', '_orig_mod.')


def unwrapped_name(name: str) -> str:
    """A parameter's name in the unwrapped model (checkpoint and compile wrappers add prefixes)."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, '')
    return name


def original_class(module: nn.Module) -> type[nn.Module]:
    """The module's own class: fully_shard swaps in a subclass of it."""
    return next(cls for cls in type(module).__mro__ if not issubclass(cls, FSDPModule))


def local_slices(param: torch.Tensor) -> tuple[slice, ...]:
    """The index of this rank's part of `param`'s full value (everything when it is not a DTensor)."""
    if not isinstance(param, DTensor):
        return tuple(slice(None) for _ in param.shape)
    # The private helper is the one DTensor itself uses to place a shard (uneven shards included).
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
    return tuple(slice(start, start + size) for start, size in zip(offset, shape))


def _local(param: torch.Tensor) -> torch.Tensor:
    return param.to_local() if isinstance(param, DTensor) else param


def _aliases(model: nn.Module) -> dict[int, tuple[torch.Tensor, list[str]]]:
    """id -> (parameter, every unwrapped name it has): a tied weight has several."""
    found: dict[int, tuple[torch.Tensor, list[str]]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        found.setdefault(id(param), (param, []))[1].append(unwrapped_name(name))
    return found


def _fill(param: torch.Tensor, full: torch.Tensor) -> None:
    """Copy this rank's part of `full` (the whole value, or a safetensors slice handle) into `param`."""
    local = _local(param)
    local.copy_(full[local_slices(param)].to(device=local.device, dtype=local.dtype))


def _fill_checked(param: torch.Tensor, stored: Any, where: str, expects: str) -> None:
    """_fill from a safetensors slice, after checking its shape against the parameter's (the error says both)."""
    if tuple(stored.get_shape()) != tuple(param.shape):
        raise ConfigError(f'{where} has shape {tuple(stored.get_shape())}, but {expects} {tuple(param.shape)}.')
    _fill(param, stored)


# ----- the adapter ---------------------------------------------------------------------------------------------
@torch.no_grad()
def init_adapter_shards(model: nn.Module, seed: int) -> set[int]:
    """peft's default init of every adapter parameter of `model` (lora_A from a generator seeded by `seed` and the
    parameter's name, lora_B zero), this rank's part only; the ids of those filled."""
    if has_adapter(model):
        check_meta_init(model)  # only the default init can be computed without the base weights
    filled: set[int] = set()
    for param, names in _aliases(model).values():
        if not is_adapter_parameter(names[0]):
            continue
        generator = torch.Generator().manual_seed(parameter_seed(seed, names[0]))
        _fill(param, initial_adapter_value(param.shape, names[0], generator))
        filled.add(id(param))
    return filled


@torch.no_grad()
def load_adapter_shards(model: nn.Module, file: Path) -> set[int]:
    """This rank's part of every adapter parameter from peft's adapter_model.safetensors `file`; the ids filled."""
    from safetensors import safe_open

    filled: set[int] = set()
    with safe_open(file, 'pt') as handle:
        stored = set(handle.keys())  # noqa: SIM118 - not a dict
        for param, names in _aliases(model).values():
            if not is_adapter_parameter(names[0]):
                continue
            key = adapter_file_key(names[0])
            if key not in stored:
                raise ConfigError(f'{file} has no {key} for the adapter parameter {names[0]}.')
            _fill_checked(param, handle.get_slice(key), f'{file}: {key}', 'the model expects')
            filled.add(id(param))
    return filled


# ----- pretrained ----------------------------------------------------------------------------------------------
def _file_key(names: list[str], index: dict[str, Path], prefix: str) -> str | None:
    for name in names:
        stripped = name.removeprefix(f'{prefix}.') if prefix else name
        for key in (name, stripped, f'{prefix}.{name}' if prefix else name):
            if key in index:
                return key
    return None


@torch.no_grad()
def load_local_shards(model: PreTrainedModel, folder: Path, skip: set[int]) -> set[int]:
    """Copy this rank's part of every parameter not in `skip` found in `folder`'s safetensors (by its name without
    an adapter); the ids of those filled."""
    from safetensors import safe_open

    index = safetensors_index(folder)
    filled: set[int] = set()
    with contextlib.ExitStack() as stack:
        handles = {}
        for param, names in _aliases(model).values():
            key = _file_key([base_name(name) for name in names], index, model.base_model_prefix)
            if key is None or id(param) in skip:
                continue
            if index[key] not in handles:
                handles[index[key]] = stack.enter_context(safe_open(index[key], 'pt'))
            _fill_checked(param, handles[index[key]].get_slice(key), f'{folder}: {key}',
                          'the model built from its config (and config_overrides) expects')
            filled.add(id(param))
    return filled


# ----- _init_weights -------------------------------------------------------------------------------------------
def _init_units(model: nn.Module, blocks: nn.ModuleList | None) -> Iterator[tuple[str, nn.Module, bool]]:
    """(unwrapped name, module, whole subtree?): each block with its children, every other module alone."""
    block_ids = {id(block) for block in blocks or ()}
    inside: set[int] = set()
    for name, module in model.named_modules():
        if id(module) in inside:
            continue
        whole = id(module) in block_ids
        if whole:
            inside.update(id(sub) for sub in module.modules())
        yield base_name(unwrapped_name(name)), module, whole


def _without_adapter(module: nn.Module) -> nn.Module:
    """A LoRA layer's base layer (peft's layers hold it as `base_layer`); any other module itself."""
    base = getattr(module, 'base_layer', None)
    return base if isinstance(base, nn.Module) else module


def _full_copy(module: nn.Module, recurse: bool) -> nn.Module:
    """A shell of `module` (same class without FSDP's, same attributes) whose parameters are full-size NaN
    tensors on the CPU; with `recurse`, its children are such copies too (a LoRA layer's of its base layer, so
    `_init_weights` draws what it would without the adapter), else it has none."""
    cls = original_class(module)
    clone = cls.__new__(cls)
    clone.__dict__.update(module.__dict__)
    clone._parameters = {
        name: None if param is None else nn.Parameter(torch.full(param.shape, float('nan'), dtype=param.dtype),
                                                      requires_grad=False)
        for name, param in module._parameters.items()
    }
    clone._modules = {name: None if child is None else _full_copy(_without_adapter(child), True)
                      for name, child in module._modules.items()} if recurse else {}
    return clone


def _unit_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63


@torch.no_grad()
def init_local_shards(model: PreTrainedModel, blocks: nn.ModuleList | None, seed: int, skip: set[int]) -> list[str]:
    """Fill every parameter not in `skip` from `_init_weights` (module doc); the names of those filled."""
    done = set(skip)
    filled: list[str] = []
    for name, module, whole in _init_units(model, blocks):
        own = list(module.named_parameters(recurse=whole, remove_duplicate=False))
        if all(id(param) in done for _, param in own):
            continue
        clone = _full_copy(module, whole)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_unit_seed(seed, name))
            clone.apply(model._init_weights)  # children first, as transformers' post_init applies it
        values = {base_name(key): full for key, full in clone.named_parameters(recurse=whole, remove_duplicate=False)}
        for param_name, param in own:
            if id(param) in done:
                continue
            full = values[base_name(param_name)]
            full_name = unwrapped_name(f'{name}.{param_name}' if name else param_name)
            if torch.isnan(full).any():
                raise ConfigError(f'init_device: meta: {type(model).__name__}._init_weights does not initialise '
                                  f'{full_name}; use model.init_device: cpu for this model.')
            _fill(param, full)
            done.add(id(param))
            filled.append(full_name)
    return filled


# ----- entry ---------------------------------------------------------------------------------------------------
def _owners(model: nn.Module) -> list[list[tuple[nn.Module, str]]]:
    """For each parameter owned by several modules (a tied weight), every (module, attribute name) holding it."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                owners.setdefault(id(param), []).append((module, name))
    return [group for group in owners.values() if len(group) > 1]


def _retie(groups: list[list[tuple[nn.Module, str]]]) -> None:
    """to_empty gives each owner its own new tensor: make the first owner's the one every owner holds again."""
    for (first, first_name), *others in groups:
        for module, name in others:
            setattr(module, name, first._parameters[first_name])


def allocate(model: nn.Module, device: torch.device | str) -> None:
    """Give a meta-built model uninitialised parameters on `device`, keeping its buffers' values and its tied
    weights tied (to_empty alone loses both)."""
    # to_empty swaps every tensor for an uninitialised one; the old buffers keep their values to copy back.
    buffers = {name: buffer for name, buffer in model.named_buffers() if not buffer.is_meta}
    tied = _owners(model)
    model.to_empty(device=device)
    _retie(tied)
    with torch.no_grad():
        for name, buffer in buffers.items():
            model.get_buffer(name).copy_(buffer)


def materialise_hf(model: PreTrainedModel, device: torch.device | str, blocks: nn.ModuleList | None) -> None:
    """Allocate a meta-built (possibly sharded) transformers model on `device` and fill its local shards from
    the `MetaInit` the builder attached (module doc)."""
    source = getattr(model, META_INIT_ATTR, None)
    if not isinstance(source, MetaInit):
        raise ConfigError(f'{type(model).__name__} was built on the meta device without a weights source; build '
                          'it with model.name: hf_causal_lm and init_device: meta.')
    allocate(model, device)
    adapter = (load_adapter_shards(model, source.adapter_file) if source.adapter_file
               else init_adapter_shards(model, source.seed))
    filled = load_local_shards(model, source.weights_folder, adapter) if source.weights_folder else set()
    initialised = init_local_shards(model, blocks, source.seed, filled | adapter)
    if filled and initialised:
        log.warning('%s has no weights for %s: initialised by %s._init_weights.', source.weights_folder,
                    ', '.join(initialised), type(model).__name__)
