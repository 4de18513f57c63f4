"""What a run prints: each line once (rank 0) unless it is about one rank, rank tags, and a final summary line."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_e2e import MPT_SIZE, TINY_YAML, overrides

from llmfoundry.config.time import Time, Timestamp
from llmfoundry.interfaces import TrainState
from llmfoundry.train.logs import RANK_SPECIFIC, RankFilter
from llmfoundry.train.summary import format_duration, run_summary


def record(name: str, level: int, **extra) -> logging.LogRecord:
    item = logging.LogRecord(name, level, __file__, 1, 'message', None, None)
    item.__dict__.update(extra)
    return item


def test_rank_filter_keeps_llmfoundry_info_on_rank_zero_and_rank_specific_lines_everywhere():
    zero, one = RankFilter(0, 2), RankFilter(1, 2)
    info = record('llmfoundry.train.checkpoint.saver', logging.INFO)
    assert zero.filter(info) and info.rank_tag == '[rank 0] '
    assert not one.filter(record('llmfoundry.train.checkpoint.saver', logging.INFO))
    assert one.filter(record('llmfoundry.train.trainer', logging.INFO, **RANK_SPECIFIC))
    assert one.filter(record('llmfoundry.train.parallel', logging.WARNING))
    assert one.filter(record('streaming.base.dataset', logging.INFO))  # other libraries are left alone
    single = record('llmfoundry', logging.INFO)
    assert RankFilter(0, 1).filter(single) and single.rank_tag == ''


@pytest.mark.parametrize(('seconds', 'text'), [(0.42, '0.4s'), (45, '45s'), (133, '2m13s'), (3725, '1h02m')])
def test_durations(seconds, text):
    assert format_duration(seconds) == text


def test_summary_line(tmp_path):
    state = TrainState(config=None, model=None, optimizer=None, dist=None, max_duration=Time.parse('500ba'),
                       run_name='demo', run_folder=tmp_path, device_train_batch_size=8, microbatch_size=8,
                       timestamp=Timestamp(batch=500, token=128_000), loss=3.8412)
    assert run_summary(state, f'{tmp_path}/ep0-ba500', 133) == (
        f'Run demo finished: 500 batches (128,000 tokens) in 2m13s; final train loss 3.841; checkpoint '
        f'{tmp_path}/ep0-ba500 (latest); metrics {tmp_path}/metrics.jsonl')
    state.stop_reason, state.loss = 'received SIGTERM: saving and exiting', float('nan')
    assert run_summary(state, None, 5).startswith(
        'Run demo stopped (received SIGTERM: saving and exiting): 500 batches (128,000 tokens) in 5.0s; final train '
        'loss n/a (no batch trained); no checkpoint (save_folder is not set)')


@pytest.mark.slow
def test_two_ranks_print_each_saved_checkpoint_once_and_end_with_a_summary(mds_dir, tokenizer_dir, tmp_path):
    folder = tmp_path / 'run'
    command = [sys.executable, '-m', 'llmfoundry.cli', 'train', str(TINY_YAML), '--nproc', '2',
               *overrides(mds_dir, tokenizer_dir, folder, *MPT_SIZE, 'max_duration=4ba', 'save_interval=2ba',
                          'eval_interval=100ba', 'callbacks=null', 'log_config=false', 'run_name=two-ranks')]
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1'}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    for name in ('ep0-ba2', 'ep0-ba4'):
        saved = [line for line in lines if f'Saved checkpoint {folder}/{name}' in line]
        assert len(saved) == 1 and '[rank 0] llmfoundry.train.checkpoint.saver' in saved[0], saved
    assert not [line for line in lines if '[rank 1] llmfoundry' in line and ' INFO ' in line]
    summary = [line for line in lines if 'Run two-ranks finished' in line]
    assert len(summary) == 1, lines[-20:]
    assert re.search(rf'\[rank 0\] llmfoundry\.train\.trainer: Run two-ranks finished: 4 batches \(2,048 tokens\) '
                     rf'in [0-9.]+s; final train loss [0-9.]+; checkpoint {folder}/ep0-ba4 \(latest\); metrics '
                     rf'{folder}/metrics\.jsonl$', summary[0]), summary[0]
    assert (folder / 'metrics.jsonl').is_file()


@pytest.mark.slow
def test_a_config_error_on_two_ranks_is_printed_once(tokenizer_dir, tmp_path):
    command = [sys.executable, '-m', 'llmfoundry.cli', 'train', str(TINY_YAML), '--nproc', '2',
               f'variables.data_local={tmp_path}/no-mds', f'variables.tokenizer={tokenizer_dir}',
               f'save_folder={tmp_path}/run']
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if 'Config error' in line]
    assert errors == [f"Config error: train_loader.dataset.local='{tmp_path}/no-mds' does not exist and "
                      'train_loader.dataset.remote is not set; create the shards with: llmfoundry data-prep '
                      f'convert_text_to_mds --input_folder YOUR_TEXT_FOLDER --output_folder {tmp_path}/no-mds/train '
                      f"--concat_tokens 256 --tokenizer {tokenizer_dir} --eos_text '<|endoftext|>'"]
    assert not Path(tmp_path / 'run').exists()
