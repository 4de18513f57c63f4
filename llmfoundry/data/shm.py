"""Remove shared memory that killed StreamingDataset runs left behind, without touching live runs.

mosaicml-streaming names each run's shared memory `NNNNNN_<what>` (/dev/shm) and its file locks
`NNNNNN_*_filelock` (temp dir), picking the first prefix NNNNNN with neither, so two live runs on one
machine never share names. A run killed with SIGKILL leaves its segments behind; a rerun with the same
local/remote then fails ("Reused local directory"), and every finished run leaves its lock files. streaming's
`clean_stale_shared_memory()` unlinks every streaming segment on the machine, including those of runs still
going (another user's, or an eval job next to a training job), so we remove only what is provably stale:

- a live run keeps all its segments mapped (Python's shared memory, mode 0600: only its owner's processes,
  or root's, can map them), and creates its lock files only after mapping its segments. So a segment is
  stale when no process maps it (read from /proc/<pid>/maps), and a lock file is stale when no segment of
  its prefix is in use and nobody holds the lock (flock) right now;
- a process whose maps we may not read (another user's, /proc mounted with hidepid) might hold anything its
  user owns: files of such a user are never removed (and another user's files in a sticky directory cannot be);
- the candidates are listed (with inode and change time) before the maps are read, so the files of a run that starts
  meanwhile are never candidates, even when they reuse the name of a stale file that another cleaner removed.

Where /proc is missing (not Linux) we fall back to streaming's function.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SHM_DIR = '/dev/shm'
_NAME = re.compile(r'^(\d{6})_[a-z_]+$')
_LOCK = re.compile(r'^(\d{6})_[a-z_]+_filelock$')


@dataclass
class _Mappings:
    names: set[str] = field(default_factory=set)  # basenames of /dev/shm files some inspected process maps
    hidden_uids: set[int] = field(default_factory=set)  # owners of processes whose maps we may not read


def _mapped_shm_names() -> _Mappings:
    """What every process maps from /dev/shm, and whose processes we could not inspect."""
    seen = _Mappings()
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/maps') as f:
                for line in f:
                    at = line.find(SHM_DIR + '/')
                    if at >= 0:
                        seen.names.add(line[at + len(SHM_DIR) + 1:].split(' ', 1)[0].strip())
        except PermissionError:  # not ours to read: it may map anything its user owns
            try:
                uid = os.stat(f'/proc/{pid}').st_uid
            except OSError:
                continue
            # Root reads every dumpable process: one it cannot read is non-dumpable (a setuid program, a
            # sandbox's init), never a Python training job. For other users, a hidden root job may be ours.
            if uid != 0 or os.geteuid() != 0:
                seen.hidden_uids.add(uid)
        except OSError:  # the process exited meanwhile
            continue
    return seen


def clean_stale_streaming_shm(lock_dir: str | None = None) -> list[str]:
    """Unlink provably stale streaming segments and lock files (see the module docstring); returns them."""
    if not (os.path.isdir('/proc/self') and os.path.isdir(SHM_DIR)):
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()
        return []
    lock_dir = lock_dir or tempfile.gettempdir()
    segments = _listed(SHM_DIR, _NAME)
    locks = _listed(lock_dir, _LOCK)
    seen = _mapped_shm_names()  # after listing: whatever a starting run creates meanwhile is no candidate
    removed, live_prefixes = [], set()
    for path, stat in segments.items():
        name = os.path.basename(path)
        if name in seen.names or stat.st_uid in seen.hidden_uids:
            live_prefixes.add(name[:6])
        else:
            removed += _unlink(path, stat)
    for path, stat in locks.items():
        if os.path.basename(path)[:6] not in live_prefixes and stat.st_uid not in seen.hidden_uids:
            removed += _unlink_unlocked(path, stat)
    if removed:
        log.info('removed stale streaming shared memory/locks: %s', removed)
    return removed


def _listed(folder: str, pattern: re.Pattern) -> dict[str, os.stat_result]:
    """The files in `folder` whose names match, each with the identity it has now."""
    found = {}
    for name in os.listdir(folder):
        if pattern.match(name):
            path = os.path.join(folder, name)
            try:
                found[path] = os.stat(path)
            except OSError:
                continue
    return found


def _same_file(path: str, stat: os.stat_result) -> bool:
    """Whether `path` is still the file we listed: a run that starts meanwhile may reuse the name (after another
    cleaner removed the stale file), and its new file is not ours to judge."""
    try:
        now = os.stat(path)
    except OSError:
        return False
    # ext4 hands a freed inode number to the next new file at once: the change time tells them apart.
    return (now.st_dev, now.st_ino, now.st_ctime_ns) == (stat.st_dev, stat.st_ino, stat.st_ctime_ns)


def _unlink_unlocked(path: str, stat: os.stat_result) -> list[str]:
    """Unlink a lock file unless someone holds it; we hold it ourselves while unlinking."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return []
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held by a live process
        os.close(fd)
        return []
    try:
        return _unlink(path, stat)
    finally:
        os.close(fd)


def _unlink(path: str, stat: os.stat_result) -> list[str]:
    if not _same_file(path, stat):
        return []
    try:
        os.unlink(path)
    except (FileNotFoundError, PermissionError):  # gone already, or another user's (sticky directory)
        return []
    return [path]
