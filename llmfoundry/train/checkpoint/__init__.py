"""Sharded, atomic, resharding-capable training checkpoints (torch.distributed.checkpoint), local or on S3.

`save` writes one folder per checkpoint and repoints `latest` only once every rank's files check out;
`find_latest` picks the newest complete one for autoresume; `load` restores it on any world size, or
migrates the weights of a Composer checkpoint. See layout.py for the on-disk layout.
"""

from .checkpointer import CheckpointParts, Restored, SaveSettings, find_latest, load, save
from .errors import CheckpointError

__all__ = ['CheckpointError', 'CheckpointParts', 'Restored', 'SaveSettings', 'find_latest', 'load', 'save']
