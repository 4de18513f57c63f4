"""A diverged run (nan_monitor) exits with an error, leaves `latest` at the last good checkpoint, saves its state
only on request under a name autoresume never picks, and resumes from the good checkpoint with a changed config.

The MDS shards (`mds_dir`) come from tests/train/conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train_e2e import MPT_SIZE, TINY_YAML, overrides
from test_trainer_step import batches, make_trainer

from llmfoundry.callbacks import HuggingFaceCheckpointer, NaNMonitor
from llmfoundry.train.checkpoint import find_latest
from llmfoundry.train.entry import DIVERGED_EXIT
from llmfoundry.train.entry import main as train
from llmfoundry.train.fault_injection import NAN_ENV
from llmfoundry.train.trainer import RunDiverged


def logged(run_folder: Path, key: str) -> list[tuple[int, float]]:
    """(batch, value) of every record with `key` in metrics.jsonl, in the order they were logged."""
    lines = (run_folder / 'metrics.jsonl').read_text().splitlines()
    return [(record['batch'], record[key]) for record in map(json.loads, lines) if key in record]


def batches_logged(run_folder: Path) -> list[int]:
    return [batch for batch, _ in logged(run_folder, 'loss/train/total')]


def test_a_diverged_run_exits_with_an_error_and_resumes_from_the_last_good_checkpoint(
        mds_dir, tokenizer_dir, tmp_path, monkeypatch, capsys):
    folder = tmp_path / 'run'

    def run(*extra: str) -> int:
        return train([str(TINY_YAML), *overrides(mds_dir, tokenizer_dir, folder, *MPT_SIZE, 'max_duration=12ba',
                                                 'save_interval=5ba', 'eval_interval=100ba', 'autoresume=true',
                                                 'run_name=diverge-test', 'callbacks={nan_monitor: {}}', *extra)])

    monkeypatch.setenv(NAN_ENV, '8')
    assert run('save_on_divergence=true') == DIVERGED_EXIT
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith('Diverged: nan_monitor: the training loss is nan at batch 8'), error
    assert f'latest still names {folder / "ep0-ba5"}' in error and 'optimizer.lr=' in error, error
    assert f'saved at {folder / "diverged-ep0-ba8"}' in error, error
    assert (folder / 'latest').read_text().strip() == 'ep0-ba5'
    assert (folder / 'diverged-ep0-ba8' / '.complete').exists()  # loadable through load_path, for a post-mortem
    assert find_latest(str(folder)) == str(folder / 'ep0-ba5')
    assert batches_logged(folder) == list(range(1, 9))

    monkeypatch.delenv(NAN_ENV)  # the restart changes the config (a lower lr) and resumes from batch 5
    assert run('optimizer.lr=1.0e-3') == 0
    assert (folder / 'latest').read_text().strip() == 'ep0-ba12'
    assert batches_logged(folder) == list(range(1, 9)) + list(range(6, 13))
    first_lr, restarted_lr = (lr for batch, lr in logged(folder, 'lr-DecoupledAdamW/group0') if batch == 6)
    assert restarted_lr == first_lr / 3  # the config's lr (the YAML's 3e-3 lowered to 1e-3), not the checkpoint's


def test_no_callback_exports_the_diverging_batch_whatever_the_callback_order(tmp_path, monkeypatch):
    monkeypatch.setenv(NAN_ENV, '2')
    exporter = HuggingFaceCheckpointer(save_folder=str(tmp_path / 'out'), save_interval='1ba')
    trainer = make_trainer(tmp_path, batches(3), 4, [exporter, NaNMonitor()])  # the exporter's batch_end runs first
    with pytest.raises(RunDiverged, match='nan_monitor: the training loss is nan at batch 2'):
        trainer.fit()
    assert sorted(p.name for p in (tmp_path / 'out' / 'huggingface').iterdir()) == ['ba1']
