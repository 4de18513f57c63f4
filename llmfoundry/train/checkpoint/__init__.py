"""Sharded, atomic, resharding-capable training checkpoints (torch.distributed.checkpoint), local or on S3.

`save` writes one folder per checkpoint and repoints `latest` only once every rank's files check out;
`find_latest` picks the newest complete one for autoresume; `load` restores it on any world size, or
migrates the weights of a Composer checkpoint. The trainer saves through `CheckpointSaver` and starts
through `resume`; `check_load_path` vets load_path before a run builds anything; the `is_*` predicates tell
tools (`llmfoundry convert`) what kind of path they were given.

The names below are the package's interface; its modules are its internals:
    checkpointer.py  save / load / find_latest and what a checkpoint holds (DCP keys, rank-0 decisions)
    saver.py         when a run saves (save_interval crossings, end of training)
    resume.py        autoresume / load_path: which checkpoint a run starts from
    layout.py        the on-disk layout: folder names, `latest`, the `.complete` marker, completeness
    formats.py       what a load path may be (ours, Composer's) and a cheap readability check
    composer.py      reading the weights of Composer checkpoints without Composer
    rng.py           per-rank generator state: capture, restore, reseed
    dcp_io.py        DCP save / load at a local folder or any storage.py URL
    errors.py        CheckpointError
"""

from .checkpointer import (
    CONSOLIDATED_FILE,
    CheckpointParts,
    Restored,
    SaveSettings,
    find_latest,
    load,
    read_config_text,
    save,
)
from .composer import is_composer_checkpoint
from .errors import CheckpointError
from .formats import is_run_folder, is_training_checkpoint
from .resume import check_load_path, resume
from .saver import CheckpointSaver

__all__ = [
    'CONSOLIDATED_FILE', 'CheckpointError', 'CheckpointParts', 'CheckpointSaver', 'Restored', 'SaveSettings',
    'check_load_path', 'find_latest', 'is_composer_checkpoint', 'is_run_folder', 'is_training_checkpoint', 'load',
    'read_config_text', 'resume', 'save',
]
