"""Shared memory: a rerun after SIGKILL works, and two live runs on one machine do not collide."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest
from mds_reference import read_rows

from llmfoundry.data.prep.cli import main as prep_main
from llmfoundry.data.shm import SHM_DIR, _mapped_shm_names, clean_stale_streaming_shm
from llmfoundry.data.text_loader import build_text_dataloader

pytestmark = pytest.mark.slow
L = 64

# argv: tokenizer_dir, dataset config (JSON), mode. 'kill': SIGKILL its process group after one batch
# (with Python's resource tracker, which would otherwise unlink the segments: a killed job loses both);
# 'pause': report its shared memory, wait for a line on stdin, then finish the epoch.
CHILD = r'''
import json, os, signal, sys
from llmfoundry.data.text_loader import build_text_dataloader
from llmfoundry.data.tokenizers import build_tokenizer
loader = build_text_dataloader({'dataset': json.loads(sys.argv[2])}, build_tokenizer(sys.argv[1]), 2)
it = iter(loader)
rows = next(it)['input_ids'].tolist()
if sys.argv[3] == 'kill':
    os.killpg(os.getpgrp(), signal.SIGKILL)
prefix = f'{loader.dataset._shm_prefix_int:06}_'
print(json.dumps({'prefix': prefix, 'shm': sorted(n for n in os.listdir('/dev/shm') if n.startswith(prefix))}),
      flush=True)
sys.stdin.readline()
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


def test_rerun_after_sigkill_cleans_stale_shared_memory(tmp_path, packed, tokenizer, tokenizer_dir,
                                                         subprocess_env, monkeypatch):
    dataset = {'remote': packed, 'local': str(tmp_path / 'cache'), 'max_seq_len': L}
    killed = _child(tokenizer_dir, dataset, 'kill', subprocess_env)
    assert killed.wait(timeout=120) == -signal.SIGKILL
    stale = {n for n in os.listdir(SHM_DIR) if n[:6].isdigit()} - _mapped_shm_names()
    assert stale, 'a SIGKILLed StreamingDataset leaves its shared memory behind'
    # The rerun gets a fresh temp dir (as with a per-job TMPDIR), so streaming's file locks no longer
    # flag the dead run's prefix: without cleaning, streaming refuses the same local/remote pair.
    job_tmp = str(tmp_path / 'job-tmp')
    os.makedirs(job_tmp)
    plain = subprocess.run([sys.executable, '-c', PLAIN_STREAMING, packed, dataset['local']],
                           env={**subprocess_env, 'TMPDIR': job_tmp}, capture_output=True, text=True, timeout=120)
    assert plain.returncode != 0 and 'Reused local directory' in plain.stderr
    monkeypatch.setattr(tempfile, 'tempdir', job_tmp)
    assert {os.path.join(SHM_DIR, n) for n in stale} <= set(clean_stale_streaming_shm())
    loader = build_text_dataloader({'dataset': dataset}, tokenizer, 2)
    assert [r for b in loader for r in b['input_ids'].tolist()] == read_rows(packed)


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
