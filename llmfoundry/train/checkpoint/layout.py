"""The on-disk layout of a save folder, and what makes a checkpoint folder complete.

    {save_folder}/                 save_folder with {run_name} filled in (local path or URL)
        latest                     text: the name of the newest complete checkpoint folder
        ep0-ba10/                  one folder per checkpoint, named from save_filename
            .metadata              DCP's index of every entry (written last by DCP, by rank 0)
            __0_0.distcp ...       DCP data files, one (or more) per rank
            .complete              JSON, written by rank 0 only after the check below passed
        diverged-ep0-ba12/         a run stopped by nan_monitor / loss_spike, saved only with save_on_divergence:
                                   complete and loadable through load_path, but never `latest`, never picked by
                                   autoresume and never pruned

A folder is a usable checkpoint when `.complete` exists and `problems()` finds nothing: `.metadata` reads
back and every data file it references exists and is long enough for the bytes it indexes. A save that
died half-way therefore never counts, whatever files it left behind.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import asdict
from typing import Any

from torch.distributed.checkpoint.metadata import Metadata

from llmfoundry import storage
from llmfoundry.config.time import Timestamp

from . import dcp_io
from .errors import CheckpointError

METADATA = '.metadata'
COMPLETE = '.complete'
LATEST = 'latest'
DIVERGED_PREFIX = 'diverged-'

# Composer names one file per rank ('ep{epoch}-ba{batch}-rank{rank}.pt'); a DCP checkpoint is one folder for
# all ranks, so that suffix (and a bare '.pt') is dropped: the default becomes 'ep{epoch}-ba{batch}'.
_COMPOSER_SUFFIX = re.compile(r'[-_.]?rank\{rank\}(\.pt)?$|\.pt$')


def folder_name(save_filename: str, timestamp: Timestamp, run_name: str = '') -> str:
    """The checkpoint folder name for `timestamp`: save_filename with {epoch} {batch} {sample} {token} {run_name}."""
    pattern = _COMPOSER_SUFFIX.sub('', save_filename)
    if '{rank}' in pattern:
        raise CheckpointError(
            f"save_filename={save_filename!r}: a sharded checkpoint is one folder for every rank, so the name cannot "
            "contain {rank} except as Composer's trailing '-rank{rank}.pt' (which is dropped)."
        )
    try:
        name = pattern.format(epoch=timestamp.epoch, batch=timestamp.batch, sample=timestamp.sample,
                              token=timestamp.token, run_name=run_name)
    except (KeyError, IndexError, ValueError) as err:
        raise CheckpointError(
            f'save_filename={save_filename!r}: unknown placeholder {err}; use {{epoch}}, {{batch}}, {{sample}}, '
            '{token} or {run_name}.'
        ) from err
    if not name or '/' in name or name in ('.', '..', LATEST):
        raise CheckpointError(f'save_filename={save_filename!r} gives the folder name {name!r}, which is not usable.')
    return name


def is_diverged(name: str) -> bool:
    """A checkpoint folder of a diverged run's last state (autoresume and pruning pass it over)."""
    return name.startswith(DIVERGED_PREFIX)


def resolve_folder(save_folder: str, run_name: str) -> str:
    """save_folder with {run_name} filled in (llm-foundry YAMLs write e.g. 's3://bucket/{run_name}/checkpoints')."""
    return save_folder.replace('{run_name}', run_name)


def read_metadata(path: str) -> Metadata:
    return dcp_io.reader(path).read_metadata()


def problems(path: str) -> list[str]:
    """Why the DCP folder at `path` cannot be loaded (empty when its data is all there)."""
    sizes = storage.file_sizes(path)
    if METADATA not in sizes:
        return [f'{METADATA} is missing']
    try:
        metadata = read_metadata(path)
    except Exception as err:  # noqa: BLE001 - a truncated or garbled index fails in many ways; keep the reason
        return [f'{METADATA} cannot be read ({type(err).__name__}: {err})']
    needed: dict[str, int] = defaultdict(int)
    for info in (metadata.storage_data or {}).values():
        needed[info.relative_path] = max(needed[info.relative_path], info.offset + info.length)
    found = []
    for name, size in sorted(needed.items()):
        if name not in sizes:
            found.append(f'data file {name} is missing')
        elif sizes[name] < size:
            found.append(f'data file {name} is truncated ({sizes[name]} of {size} bytes)')
    return found


def write_marker(path: str, timestamp: Timestamp, world_size: int, weights_only: bool, saved_at: float) -> None:
    marker = {'timestamp': asdict(timestamp), 'world_size': world_size, 'weights_only': weights_only,
              'saved_at': saved_at}
    storage.write_text(storage.join(path, COMPLETE), json.dumps(marker))


def read_marker(path: str) -> dict[str, Any] | None:
    """The `.complete` marker of a checkpoint folder, or None when the save never finished."""
    url = storage.join(path, COMPLETE)
    if not storage.exists(url):
        return None
    try:
        return json.loads(storage.read_text(url))
    except (ValueError, OSError):
        return None


def resumable_folders(save_folder: str) -> list[str]:
    """The folders under save_folder that may hold a checkpoint to resume from (all but diverged ones)."""
    return [name for name in storage.list_folders(save_folder) if not is_diverged(name)]


def marked_checkpoints(save_folder: str) -> list[tuple[str, dict[str, Any]]]:
    """(folder name, marker) of every folder under save_folder with a `.complete` marker, oldest save first;
    diverged checkpoints are not among them."""
    found = []
    for name in resumable_folders(save_folder):
        marker = read_marker(storage.join(save_folder, name))
        if marker is not None:
            found.append((name, marker))
    return sorted(found, key=lambda item: (item[1]['saved_at'], item[1]['timestamp']['batch']))
