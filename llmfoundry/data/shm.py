"""Remove shared memory that killed StreamingDataset runs left behind, without touching live runs.

mosaicml-streaming names each run's shared memory `NNNNNN_<what>` (/dev/shm) and its file locks
`NNNNNN_*_filelock` (temp dir), picking the first free prefix NNNNNN, so two live runs on one machine
never share names. A run killed with SIGKILL leaves its segments behind; a rerun with the same
local/remote then fails ("Reused local directory"). streaming's `clean_stale_shared_memory()`
unlinks every streaming segment on the machine, including those of runs still going, so we remove
only segments that no process maps (read from /proc/<pid>/maps), plus the lock files of prefixes
left with no live segment. Where /proc is missing (not Linux) we fall back to streaming's function.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile

log = logging.getLogger(__name__)

SHM_DIR = '/dev/shm'
_NAME = re.compile(r'^(\d{6})_[a-z_]+$')
_LOCK = re.compile(r'^(\d{6})_[a-z_]+_filelock$')


def _mapped_shm_names() -> set[str]:
    """Basenames of /dev/shm files mapped by any process we can inspect."""
    names: set[str] = set()
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/maps') as f:
                for line in f:
                    at = line.find(SHM_DIR + '/')
                    if at >= 0:
                        names.add(line[at + len(SHM_DIR) + 1:].split(' ', 1)[0].strip())
        except OSError:  # the process exited meanwhile, or is not ours to read
            continue
    return names


def clean_stale_streaming_shm(lock_dir: str | None = None) -> list[str]:
    """Unlink unmapped streaming segments and their prefixes' lock files; returns what was removed."""
    if not (os.path.isdir('/proc/self') and os.path.isdir(SHM_DIR)):
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()
        return []
    lock_dir = lock_dir or tempfile.gettempdir()
    in_use = _mapped_shm_names()
    live_prefixes = {m.group(1) for name in in_use if (m := _NAME.match(name))}
    removed = []
    for name in os.listdir(SHM_DIR):
        if _NAME.match(name) and name not in in_use:
            removed += _unlink(os.path.join(SHM_DIR, name))
    for name in os.listdir(lock_dir):
        m = _LOCK.match(name)
        if m and m.group(1) not in live_prefixes:
            removed += _unlink(os.path.join(lock_dir, name))
    if removed:
        log.info('removed stale streaming shared memory/locks: %s', removed)
    return removed


def _unlink(path: str) -> list[str]:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return []
    return [path]
