"""host_memory.keep_freed_memory: a block freed and allocated again is not faulted in again (glibc only)."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys

import pytest

from llmfoundry.train.host_memory import user_tuned_malloc

LIBC = ctypes.util.find_library('c')
glibc_only = pytest.mark.skipif(LIBC is None or not hasattr(ctypes.CDLL(LIBC), 'gnu_get_libc_version'),
                                reason='the thresholds are glibc malloc settings')

# A training step's pattern: allocate 64 MiB, write every page, free it; ten times after one warm-up round. Prints
# whether the thresholds were set and the minor page faults of the ten rounds.
PROGRAM = """
import ctypes, ctypes.util, json, resource
from llmfoundry.train.host_memory import keep_freed_memory
applied = keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library('c'))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def round_trip():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_trip()
print(json.dumps({'applied': applied, 'faults': resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def run_program(**environ: str) -> dict:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith('MALLOC_') and key != 'GLIBC_TUNABLES'}
    result = subprocess.run([sys.executable, '-c', PROGRAM], env={**env, **environ}, capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout)


@glibc_only
def test_freed_memory_is_reused_without_page_faults() -> None:
    pages = (64 << 20) // os.sysconf('SC_PAGE_SIZE')
    kept = run_program()
    assert kept['applied'] is True
    assert kept['faults'] < pages // 10  # 10 rounds x 16,384 pages would fault without the setting
    # The user's own malloc setting wins: nothing is changed and glibc maps and unmaps every block again.
    theirs = run_program(GLIBC_TUNABLES='glibc.malloc.mmap_threshold=131072')
    assert theirs['applied'] is False
    assert theirs['faults'] >= 10 * pages * 0.9


def test_user_malloc_settings_are_recognised() -> None:
    assert not user_tuned_malloc({})
    assert not user_tuned_malloc({'GLIBC_TUNABLES': 'glibc.pthread.rseq=0'})
    assert user_tuned_malloc({'GLIBC_TUNABLES': 'glibc.pthread.rseq=0:glibc.malloc.trim_threshold=1'})
    assert user_tuned_malloc({'MALLOC_MMAP_THRESHOLD_': '1'})
