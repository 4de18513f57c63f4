"""End to end on a real text+code corpus: the tiny YAML trains, and 2 ranks reach 1 rank's losses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmfoundry.data.prep.cli import main as data_prep
from llmfoundry.train.entry import main as train

REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / 'yamls' / 'pretrain' / 'mpt-tiny-cpu.yaml'


@pytest.fixture(scope='module')
def mds_dir(corpus_dir: Path, tokenizer_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('mds')
    assert data_prep(['convert_text_to_mds', '--input_folder', str(corpus_dir), '--output_folder', str(out / 'train'),
                      '--concat_tokens', '64', '--tokenizer', tokenizer_dir, '--eos_text', '<|endoftext|>']) == 0
    shutil.copytree(out / 'train', out / 'val')
    return out


def overrides(mds_dir: Path, tokenizer_dir: str, run_folder: Path, *extra: str) -> list[str]:
    return [
        f'variables.data_local={mds_dir}', f'variables.tokenizer={tokenizer_dir}', 'variables.max_seq_len=64',
        'model.vocab_size=1024', 'model.d_model=64', 'model.n_layers=2', 'max_duration=10ba',
        'global_train_batch_size=8', 'device_train_microbatch_size=2', 'console_log_interval=1ba',
        'train_loader.dataset.num_canonical_nodes=1', 'eval_loader.dataset.num_canonical_nodes=1',
        'eval_subset_num_batches=4', f'save_folder={run_folder}', *extra,
    ]


def read_metrics(run_folder: Path) -> list[dict]:
    return [json.loads(line) for line in (run_folder / 'metrics.jsonl').read_text().splitlines()]


def train_losses(records: list[dict]) -> dict[int, float]:
    return {r['batch']: r['loss/train/total'] for r in records if 'loss/train/total' in r}


@pytest.mark.slow
def test_tiny_yaml_trains_and_two_ranks_match_one(mds_dir, tokenizer_dir, tmp_path):
    single = tmp_path / 'single'
    assert train([str(TINY_YAML), *overrides(mds_dir, tokenizer_dir, single, 'eval_first=true',
                                             'eval_interval=10ba')]) == 0
    records = read_metrics(single)
    losses = train_losses(records)
    assert sorted(losses) == list(range(1, 11))
    evals = [r['metrics/eval/LanguageCrossEntropy'] for r in records if 'metrics/eval/LanguageCrossEntropy' in r]
    assert len(evals) == 2 and evals[1] < evals[0] - 0.5  # the eval loss falls visibly in 10 steps
    assert all('metrics/train/TokenAccuracy' in r for r in records if 'loss/train/total' in r)
    assert records[-1]['tokens'] == 10 * 8 * 64 and records[-1]['samples'] == 80
    saved = yaml.safe_load((single / 'config.yaml').read_text())
    assert saved['model']['d_model'] == 64 and 'variables' not in saved

    double = tmp_path / 'double'
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    command = [sys.executable, '-m', 'llmfoundry.cli', 'train', str(TINY_YAML), '--nproc', '2',
               *overrides(mds_dir, tokenizer_dir, double, 'eval_interval=10ba')]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    two_rank = train_losses(read_metrics(double))
    for batch, loss in losses.items():
        assert two_rank[batch] == pytest.approx(loss, rel=1e-5), batch
