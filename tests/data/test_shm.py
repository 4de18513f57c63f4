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

from llmfoundry.data.prep.cli import main as prep_main
from llmfoundry.data.shm import SHM_DIR, clean_stale_streaming_shm
from llmfoundry.data.text_loader import build_text_dataloader

pytestmark = pytest.mark.slow
L = 64

# argv: tokenizer_dir, dataset config (JSON), mode. After one batch it reports its shared memory prefix and
# segments, then waits for a line on stdin. 'kill': then SIGKILL its process group (with Python's resource
# tracker, which would otherwise unlink the segments: a killed job loses both); 'pause': finish the epoch.
CHILD = r'''
import json, os, signal, sys
from llmfoundry.data.text_loader import build_text_dataloader
from llmfoundry.data.tokenizers import build_tokenizer
loader = build_text_dataloader({'dataset': json.loads(sys.argv[2])}, build_tokenizer(sys.argv[1]), 2)
it = iter(loader)
rows = next(it)['input_ids'].tolist()
prefix = f'{loader.dataset._shm_prefix_int:06}_'
print(json.dumps({'prefix': prefix, 'shm': sorted(n for n in os.listdir('/dev/shm') if n.startswith(prefix))}),
      flush=True)
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
        assert f'{loader.dataset._shm_prefix_int:06}_' != first['prefix']
        ours = [r for b in loader for r in b['input_ids'].tolist()]
        out, _ = other.communicate('go\n', timeout=120)
    finally:
        other.kill()
    assert other.returncode == 0
    expected = read_rows(packed)
    assert ours == expected and json.loads(out) == expected
