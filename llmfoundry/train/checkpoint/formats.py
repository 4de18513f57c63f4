"""What a checkpoint path may be, and a cheap check that it is one of those (nothing is unpickled or loaded).

Readable: our checkpoint folder (DCP files, `.metadata`, `.complete`), Composer's sharded folder (DCP with
'state.model.*' entries), Composer's monolithic `.pt` (a torch.save zip archive or legacy pickle). A run's
save_folder (with `latest`) is resolved to its newest checkpoint before this check, by the trainer.
"""

from __future__ import annotations

from typing import Any

from llmfoundry import storage

from . import composer, layout
from .errors import CheckpointError

ACCEPTED = (
    'a checkpoint folder we saved (e.g. SAVE_FOLDER/ep0-ba500), a save_folder with a `latest` file (its newest '
    "checkpoint), SAVE_FOLDER/latest-rank{rank}.pt (llm-foundry's pointer: the same), or a Composer checkpoint "
    '(a .pt file or a sharded folder; weights only)'
)
_TORCH_SAVE_MAGIC = (b'PK\x03\x04', b'\x80')  # torch.save's zip archive; the legacy format is a pickle


def is_training_checkpoint(path: str) -> bool:
    """A DCP checkpoint folder (ours or Composer's) or a Composer `.pt`, as opposed to e.g. a Hugging Face folder."""
    return path.endswith('.pt') or storage.exists(storage.join(path, layout.METADATA))


def is_run_folder(path: str) -> bool:
    """A training save_folder: it holds `latest` next to one folder per checkpoint."""
    return storage.exists(storage.join(path, layout.LATEST))


def not_readable(path: str, why: str) -> CheckpointError:
    return CheckpointError(f'{path} is not a checkpoint we can read ({why}). Accepted: {ACCEPTED}.')


def check_readable(path: str) -> dict[str, Any] | None:
    """Raise CheckpointError unless `path` is a checkpoint `load` can read; returns our `.complete` marker
    (None for a Composer checkpoint). Reads only the folder listing, `.metadata` and a file's first bytes."""
    if not storage.exists(path):
        raise CheckpointError(f'{path} does not exist.')
    fs, inner = storage.filesystem(path)
    if not fs.isdir(inner):
        if not path.endswith('.pt'):
            raise not_readable(path, 'a file, and the only checkpoint file read is a Composer .pt')
        with fs.open(inner, 'rb') as file:
            head = file.read(4)
        if not head.startswith(_TORCH_SAVE_MAGIC):
            raise not_readable(path, 'a .pt file that torch.save did not write: neither a zip archive nor a pickle')
        return None
    if not storage.exists(storage.join(path, layout.METADATA)):
        why = 'a folder without .metadata'
        if storage.list_folders(path):
            why += ' and without a `latest` file'
        raise not_readable(path, why)
    if composer.is_composer_checkpoint(path):
        return None
    found = layout.problems(path)
    marker = layout.read_marker(path)
    if marker is None:
        found.append(f'{layout.COMPLETE} is missing (the save was interrupted)')
    if found:
        raise CheckpointError(f'checkpoint {path} cannot be loaded: ' + '; '.join(found))
    return marker
