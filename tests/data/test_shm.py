"""Shared memory: a rerun after SIGKILL works, and two live runs on one machine do not collide."""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
from mds_reference import read_rows

from llmfoundry.data import shm as shm_module
from llmfoundry.data.prep.cli import main as prep_main
from llmfoundry.data.shm import SHM_DIR, clean_stale_streaming_shm
from llmfoundry.data.text_loader import build_text_dataloader

pytestmark = pytest.mark.slow
L = 64

# argv: tokenizer_dir, dataset config (JSON), mode. After one batch it reports its shared memory prefix and
# segments, then waits for a line on stdin. 'kill': then SIGKILL its process group (with Python's resource
# tracker, which would otherwise unlink the segments: a killed job loses both); 'pause': finish the epoch.
CHILD = r'''
import json, os, signal, sys, tempfile
from llmfoundry.data.text_loader import build_text_dataloader
from llmfoundry.data.tokenizers import build_tokenizer
loader = build_text_dataloader({'dataset': json.loads(sys.argv[2])}, build_tokenizer(sys.argv[1]), 2)
it = iter(loader)
rows = next(it)['input_ids'].tolist()
prefix = f'{loader.dataset._shm_prefix_int:06}_'
locks = sorted(n for n in os.listdir(tempfile.gettempdir()) if n.startswith(prefix) and n.endswith('_filelock'))
print(json.dumps({'prefix': prefix, 'shm': sorted(n for n in os.listdir('/dev/shm') if n.startswith(prefix)),
                  'locks': locks}), flush=True)
sys.stdin.readline()
if sys.argv[3] == 'kill':
    os.killpg(os.getpgrp(), signal.SIGKILL)
rows += [r for b in it for r in b['input_ids'].tolist()]
print(json.dumps(rows), flush=True)
'''

PLAIN_STREAMING = r'''
import sys
from streaming import StreamingDataset
StreamingDataset(remote=sys.argv[1], local=sys.argv[2], batch_size=2)
'''


@pytest.fixture(scope='module')
def packed(tmp_path_factory, corpus_jsonl, tokenizer_dir) -> str:
    out = str(tmp_path_factory.mktemp('shm') / 'mds')
    assert prep_main(['convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', out,
                      '--concat_tokens', str(L), '--tokenizer', tokenizer_dir, '--eos_text', '<|endoftext|>']) == 0
    return out


def _child(tokenizer_dir: str, dataset: dict, mode: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-c', CHILD, tokenizer_dir, json.dumps(dataset), mode], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)


def _locks(prefix: str, lock_dir: str | None = None) -> list[str]:
    lock_dir = lock_dir or tempfile.gettempdir()
    return sorted(n for n in os.listdir(lock_dir) if n.startswith(prefix) and n.endswith('_filelock'))


@contextlib.contextmanager
def _mapped(paths: list[str]) -> Iterator[None]:
    """Map the files into this process: every cleaner on the machine (ours runs whenever an llmfoundry loader
    starts, in any process) then treats them as in use and leaves them alone."""
    maps = []
    try:
        for path in paths:
            with open(path, 'rb') as f:
                maps.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        yield
    finally:
        for m in maps:
            m.close()


def test_rerun_after_sigkill_cleans_stale_shared_memory(tmp_path, packed, tokenizer, tokenizer_dir,
                                                         subprocess_env, monkeypatch):
    """/dev/shm is shared by the whole machine, where other runs (other tests, other people's jobs) start, stop
    and clean stale segments while this test runs. So the test works on the killed run's own segments (named by
    its prefix, not whatever unmapped memory the machine has) and keeps them mapped, safe from other cleaners,
    until it cleans them itself."""
    dataset = {'remote': packed, 'local': str(tmp_path / 'cache'), 'max_seq_len': L}
    killed = _child(tokenizer_dir, dataset, 'kill', subprocess_env)
    try:
        report = json.loads(killed.stdout.readline())
        prefix, names = report['prefix'], report['shm']
        assert f'{prefix}locals' in names, report
        stale = [os.path.join(SHM_DIR, n) for n in names]
        with _mapped(stale):
            killed.communicate('go\n', timeout=120)
            assert killed.returncode == -signal.SIGKILL
            left = sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
            assert left == names, f'a SIGKILLed StreamingDataset leaves its shared memory behind: {left} != {names}'
            # The rerun gets a fresh temp dir (as with a per-job TMPDIR), so streaming's file locks no longer
            # flag the dead run's prefix: without cleaning, streaming refuses the same local/remote pair.
            # streaming walks the prefixes from 0 and takes the first with neither a lock file nor a `locals`
            # segment, so a prefix below the dead run's that another run frees meanwhile would end the walk
            # before it reaches the dead registration: the rerun's lock dir marks those lower prefixes taken.
            job_tmp = tmp_path / 'job-tmp'
            job_tmp.mkdir()
            for lower in range(int(prefix[:-1])):
                (job_tmp / f'{lower:06}_barrier_filelock').touch()
            plain = subprocess.run([sys.executable, '-c', PLAIN_STREAMING, packed, dataset['local']],
                                   env={**subprocess_env, 'TMPDIR': str(job_tmp)}, capture_output=True, text=True,
                                   timeout=120)
            assert plain.returncode != 0 and 'Reused local directory' in plain.stderr, (
                f'plain streaming should refuse the dead run\'s local dir; rc={plain.returncode}, '
                f'stderr tail: {plain.stderr[-2000:]}')
    finally:
        killed.kill()
    monkeypatch.setattr(tempfile, 'tempdir', str(job_tmp))
    removed = set(clean_stale_streaming_shm())
    # Another run's cleaner may get to a segment first, between our release and our cleaning: gone either way.
    survivors = [path for path in stale if path not in removed and os.path.exists(path)]
    assert not survivors, f'stale segments not cleaned: {survivors}; removed {sorted(removed)}'
    loader = build_text_dataloader({'dataset': dataset}, tokenizer, 2)
    rows = [r for b in loader for r in b['input_ids'].tolist()]
    expected = read_rows(packed)
    assert len(rows) == len(expected) > 0 and rows == expected


def test_two_live_runs_do_not_collide(tmp_path, packed, tokenizer, tokenizer_dir, subprocess_env):
    other = _child(tokenizer_dir, {'local': packed, 'max_seq_len': L}, 'pause', subprocess_env)
    try:
        first = json.loads(other.stdout.readline())
        # Our run starts (and cleans stale memory) while the other is mid-epoch: its segments survive.
        loader = build_text_dataloader({'dataset': {'local': packed, 'max_seq_len': L}}, tokenizer, 2)
        assert first['shm'] and all(os.path.exists(os.path.join(SHM_DIR, n)) for n in first['shm'])
        assert first['locks'], 'the other run has locked nothing yet: the test checks nothing'
        # The other run may create more lock files meanwhile (streaming makes some lazily): none may be gone.
        removed = sorted(set(first['locks']) - set(_locks(first['prefix'])))
        assert not removed, f"our start removed the other run's lock files {removed}"
        assert f'{loader.dataset._shm_prefix_int:06}_' != first['prefix']
        ours = [r for b in loader for r in b['input_ids'].tolist()]
        out, _ = other.communicate('go\n', timeout=120)
    finally:
        other.kill()
    assert other.returncode == 0
    expected = read_rows(packed)
    assert ours == expected and json.loads(out) == expected


def test_a_run_starting_while_we_clean_keeps_its_memory_and_locks(packed, tokenizer_dir, subprocess_env,
                                                                 monkeypatch):
    """Another run registers its shared memory and locks after our cleaner has read who maps what: none of its
    files may be taken for stale, and it finishes its epoch with the right data."""
    started: list[subprocess.Popen] = []
    reports: list[dict] = []
    read_mappings = shm_module._mapped_shm_names

    def mappings_then_another_run_starts():
        seen = read_mappings()
        started.append(_child(tokenizer_dir, {'local': packed, 'max_seq_len': L}, 'pause', subprocess_env))
        reports.append(json.loads(started[0].stdout.readline()))  # it is mid-epoch now
        return seen

    monkeypatch.setattr(shm_module, '_mapped_shm_names', mappings_then_another_run_starts)
    try:
        removed = clean_stale_streaming_shm()
        (other,), (report,) = started, reports
        assert report['shm'] and report['locks'], report
        ours = [path for path in removed if os.path.basename(path).startswith(report['prefix'])]
        assert not ours, f'removed the live run\'s files: {ours}'
        assert all(os.path.exists(os.path.join(SHM_DIR, n)) for n in report['shm'])
        assert _locks(report['prefix']) == report['locks']
        out, _ = other.communicate('go\n', timeout=120)
    finally:
        for proc in started:
            proc.kill()
    assert other.returncode == 0 and json.loads(out) == read_rows(packed)


HOLD_LOCK = r'''
import sys
from filelock import FileLock
with FileLock(sys.argv[1]):
    print('held', flush=True)
    sys.stdin.readline()
'''


def test_a_held_lock_file_is_never_removed(tmp_path, subprocess_env):
    """A lock file that a live process holds right now (a run we cannot see, e.g. another PID namespace, in its
    barrier or cache lock) stays; an unheld one of a prefix without live memory is stale and goes."""
    held, stale = tmp_path / '999998_cache_filelock', tmp_path / '999999_barrier_filelock'
    stale.touch()
    holder = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, str(held)], env=subprocess_env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        removed = clean_stale_streaming_shm(str(tmp_path))
        assert held.exists(), 'the lock file of a live holder was removed'
        assert str(stale) in removed and not stale.exists()
        holder.communicate('go\n', timeout=60)
    finally:
        holder.kill()
    assert holder.returncode == 0


MAP_AND_WAIT = r'''
import mmap, sys
with open(sys.argv[1], 'rb') as f:
    held = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
print('mapped', flush=True)
sys.stdin.readline()
'''
SYSTEM_PYTHON = '/usr/bin/python3'  # ours may sit in a folder other users cannot enter


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON),
                    reason='needs root (to start a job as another user) and a system python')
def test_files_of_a_user_whose_processes_we_cannot_inspect_stay(tmp_path, monkeypatch):
    """Another user's job whose memory maps we may not read (e.g. /proc mounted with hidepid) may hold any file
    that user owns: those stay, while an unmapped segment of our own is stale and goes. The job really maps its
    segment, so that other cleaners on the machine (which can read its maps) leave it alone meanwhile."""
    other_uid = 65534
    theirs, ours = os.path.join(SHM_DIR, '999997_locals'), os.path.join(SHM_DIR, '999996_locals')
    for path in (theirs, ours):
        with open(path, 'wb') as f:
            f.write(b'x')
    os.chown(theirs, other_uid, -1)
    job = subprocess.Popen([SYSTEM_PYTHON, '-c', MAP_AND_WAIT, theirs], preexec_fn=lambda: os.setuid(other_uid),
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd='/')
    real_open = open

    def hidepid_open(path, *args, **kwargs):
        if path == f'/proc/{job.pid}/maps':
            raise PermissionError(13, 'Permission denied', path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(shm_module, 'open', hidepid_open, raising=False)
    try:
        assert job.stdout.readline().strip() == 'mapped'
        removed = clean_stale_streaming_shm(str(tmp_path))
        assert os.path.exists(theirs), 'removed a file that a process we cannot inspect may map'
        # Another cleaner on the machine may have taken our stale segment first: gone either way.
        assert ours in removed or not os.path.exists(ours)
    finally:
        job.kill()
        job.wait()
        for path in (theirs, ours):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
