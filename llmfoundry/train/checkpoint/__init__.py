"""Sharded, atomic, resharding-capable training checkpoints (torch.distributed.checkpoint), local or on S3.

`save` writes one folder per checkpoint and repoints `latest` only once every rank's files check out;
`find_latest` picks the newest complete one for autoresume; `load` restores it on any world size, or
migrates the weights of a Composer checkpoint. See layout.py for the on-disk layout.
"""

from .checkpointer import (
    CONSOLIDATED_FILE,
    CheckpointParts,
    Restored,
    SaveSettings,
    find_latest,
    load,
    newest_complete,
    read_config_text,
    save,
)
from .errors import CheckpointError
from .formats import check_readable

__all__ = [
    'CONSOLIDATED_FILE', 'CheckpointError', 'CheckpointParts', 'Restored', 'SaveSettings',
    'check_readable', 'find_latest', 'load', 'newest_complete', 'read_config_text', 'save',
]
