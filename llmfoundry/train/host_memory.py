"""Keep freed host memory in the process for training and evaluation on the CPU.

glibc's malloc serves large blocks (its threshold adapts up to 32 MiB; an MPT's logits are larger) with mmap and
hands them back with munmap when torch frees them, and gives the top of its heap back once more than a few MiB are
free. A training step allocates and frees the same activations every microbatch, so every step faults every page of
them in again, zero-filled by the kernel: a third of a tiny MPT's step on a 2-core machine went to page faults, and a
process whose threads fault on the same address space serialise on it. Raising both thresholds keeps the pages for
the next step (the steady-state footprint, which the step needs anyway, stays resident).

A user who tuned malloc through the environment (GLIBC_TUNABLES, MALLOC_*_ environment variables) keeps that
setting; another C library (musl, macOS) is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

# mallopt's parameter numbers (malloc.h) and its int-sized values.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_THRESHOLD_BYTES = (1 << 31) - 1

USER_SETTINGS = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'MALLOC_TOP_PAD_')


def user_tuned_malloc(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment already sets glibc's malloc parameters (then they are the user's choice)."""
    return any(name in environ for name in USER_SETTINGS) or 'glibc.malloc.' in environ.get('GLIBC_TUNABLES', '')


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; whether they were set."""
    if user_tuned_malloc():
        return False
    name = ctypes.util.find_library('c')
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, 'gnu_get_libc_version'):  # not glibc
        return False
    applied = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if not applied:  # an old glibc caps the mmap threshold at 32 MiB and refuses more
        log.debug('glibc refused the malloc thresholds; keeping its defaults')
    return applied
