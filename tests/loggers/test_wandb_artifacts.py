"""loggers.wandb.log_artifacts: each checkpoint the trainer hands over becomes a W&B artifact of type model (a
folder with all its files, a single file, or an s3:// URL by reference); without log_artifacts nothing is stored."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llmfoundry.interfaces import LoggerDestination, MetricLogger
from llmfoundry.registry import loggers


def build(run_folder: Path, **kwargs):
    return loggers.build('wandb', kwargs, 'loggers.wandb', run_folder=run_folder, default_name='artifact-test')


def checkpoint_folder(root: Path) -> Path:
    """A checkpoint as the saver leaves it: DCP shards, the index and the completion marker."""
    folder = root / 'checkpoints' / 'ep0-ba2'
    folder.mkdir(parents=True)
    (folder / '__0_0.distcp').write_bytes(b'weights')
    (folder / '.metadata').write_bytes(b'index')
    (folder / '.complete').write_text('')
    return folder


class FakeArtifact:
    def __init__(self, name: str, type: str) -> None:  # noqa: A002 - wandb.Artifact's keyword
        self.name, self.type, self.added = name, type, []

    def add_dir(self, path: str) -> None:
        self.added.append(('dir', path))

    def add_file(self, path: str) -> None:
        self.added.append(('file', path))

    def add_reference(self, uri: str) -> None:
        self.added.append(('reference', uri))


class FakeRun:
    def __init__(self) -> None:
        self.logged: list[FakeArtifact] = []

    def log_artifact(self, artifact: FakeArtifact) -> None:
        self.logged.append(artifact)


@pytest.fixture
def fake_wandb(tmp_path, monkeypatch):
    """A wandb logger whose wandb module and run record what they are given."""
    pytest.importorskip('wandb')
    logger = build(tmp_path, log_artifacts=True)
    monkeypatch.setattr(logger._wandb, 'Artifact', FakeArtifact)
    logger._run = FakeRun()
    return logger


def test_folder_file_and_url_are_stored_each_their_way(fake_wandb, tmp_path):
    folder = checkpoint_folder(tmp_path)
    single = tmp_path / 'model weights.pt'
    single.write_bytes(b'w')
    for path in (str(folder), str(single), 's3://bucket/run/checkpoints/ep0-ba4/'):
        fake_wandb.upload_file(path)
    assert [(a.name, a.type, a.added) for a in fake_wandb._run.logged] == [
        ('ep0-ba2', 'model', [('dir', str(folder))]),
        ('model_weights.pt', 'model', [('file', str(single))]),  # the space is not allowed in artifact names
        ('ep0-ba4', 'model', [('reference', 's3://bucket/run/checkpoints/ep0-ba4/')]),
    ]


def test_without_log_artifacts_nothing_is_stored(tmp_path):
    pytest.importorskip('wandb')
    logger = build(tmp_path)
    logger._run = FakeRun()
    logger.upload_file(str(checkpoint_folder(tmp_path)))
    assert logger._run.logged == []


def test_other_destinations_ignore_files():
    MetricLogger([LoggerDestination()], True).upload_file('/no/such/checkpoint')  # the default is a no-op


def test_offline_run_records_the_checkpoint_artifact_with_every_file(tmp_path, monkeypatch):
    pytest.importorskip('wandb')
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    logger = build(tmp_path / 'run', log_artifacts=True)
    MetricLogger([logger], True).upload_file(str(checkpoint_folder(tmp_path)))
    logger.close()
    [log] = (tmp_path / 'run' / 'wandb').glob('offline-run-*/run-*.wandb')  # what `wandb sync` uploads later
    expected = (b'ep0-ba2', b'__0_0.distcp', b'.metadata', b'.complete')
    deadline = time.monotonic() + 60  # wandb's service process may still be writing the log after finish()
    while not all(text in log.read_bytes() for text in expected) and time.monotonic() < deadline:
        time.sleep(0.2)
    recorded = log.read_bytes()
    assert [text for text in expected if text not in recorded] == []
