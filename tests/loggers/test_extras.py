"""wandb, tensorboard and mlflow loggers against their real packages, offline (skipped when not installed)."""

from __future__ import annotations

import sys

import pytest

from llmfoundry.config.time import Timestamp
from llmfoundry.config.validation import ConfigError
from llmfoundry.registry import loggers

CONFIG = {'model': {'name': 'mpt_causal_lm', 'd_model': 16}, 'max_duration': '10ba', 'tags': ['a', 'b']}


def build(name: str, kwargs: dict, run_folder):
    return loggers.build(name, kwargs, f'loggers.{name}', run_folder=run_folder, default_name='test-run')


def test_wandb_offline_writes_the_run_directory(tmp_path, monkeypatch):
    pytest.importorskip('wandb')
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    checkpoint = tmp_path / 'ep0-ba2-rank0.pt'
    checkpoint.write_bytes(b'weights')
    logger = build('wandb', {'project': 'llmfoundry-tests', 'tags': ['unit'], 'log_artifacts': True}, tmp_path)
    logger.log_hyperparameters(CONFIG)
    logger.log_metrics({'loss/train/total': 3.5, 'lr-DecoupledAdamW/group0': 1e-3}, Timestamp(batch=1))
    logger.log_metrics({'loss/train/total': 3.0}, Timestamp(batch=2))
    logger.upload_file(checkpoint)
    assert logger.run.name == 'test-run'
    logger.close()
    runs = list((tmp_path / 'wandb').glob('offline-run-*'))
    assert len(runs) == 1
    assert list(runs[0].glob('run-*.wandb'))  # the offline log that `wandb sync` uploads


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'wandb', None)  # makes `import wandb` fail
    with pytest.raises(ImportError, match=r"pip install 'llmfoundry\[wandb\]'"):
        build('wandb', {}, tmp_path)


def test_unknown_logger_key_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'loggers.wandb.project'"):
        build('wandb', {'projet': 'x'}, tmp_path)


def test_tensorboard_writes_scalars(tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = build('tensorboard', {'flush_interval': 1}, tmp_path)
    logger.log_hyperparameters(CONFIG)
    for batch, loss in ((1, 3.5), (2, 3.0)):
        logger.log_metrics({'loss/train/total': loss}, Timestamp(batch=batch))
    logger.close()
    events = EventAccumulator(str(tmp_path / 'tensorboard'))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars('loss/train/total')] == [(1, 3.5), (2, 3.0)]


def test_mlflow_logs_metrics_and_flattened_params(tmp_path, monkeypatch):
    mlflow = pytest.importorskip('mlflow')
    monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')  # the full package would use sqlite; skinny lacks it
    uri = (tmp_path / 'mlruns').as_uri()
    logger = build('mlflow', {'tracking_uri': uri, 'experiment_name': 'tests'}, tmp_path)
    logger.log_hyperparameters(CONFIG)
    logger.log_metrics({'loss/train/total': 3.5, 'lr-DecoupledAdamW/group0': 1e-3}, Timestamp(batch=1))
    logger.close()
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(logger.run_id)
    assert run.info.run_name == 'test-run' and run.info.status == 'FINISHED'
    assert run.data.params['model.d_model'] == '16'
    assert run.data.params['tags'] == "['a', 'b']"
    assert run.data.metrics == {'loss/train/total': 3.5, 'lr-DecoupledAdamW/group0': 1e-3}
