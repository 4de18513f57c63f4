"""The end of training: an evaluation unless an interval just ran one (Composer's default), and each checkpoint
the run saves handed to the loggers that store files (W&B artifacts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_trainer_step import batches, make_trainer

from llmfoundry.interfaces import Callback, LoggerDestination, MetricLogger
from llmfoundry.train.checkpoint import CheckpointSaver


class EvalBatches(Callback):
    """The batch count at every evaluation."""

    def __init__(self) -> None:
        self.at: list[int] = []

    def eval_end(self, state, logger, metrics) -> None:
        assert set(metrics) == {f'metrics/eval/{name}' for name in
                                ('LanguageCrossEntropy', 'LanguagePerplexity', 'TokenAccuracy')}
        self.at.append(state.timestamp.batch)


class StopAfterFirstBatch(Callback):
    def batch_end(self, state, logger) -> None:
        state.request_stop('test stop')


class Uploads(LoggerDestination):
    def __init__(self) -> None:
        self.paths: list[str] = []

    def upload_file(self, path: str, kind: str = 'model') -> None:
        assert kind == 'model'
        self.paths.append(path)


class LoaderWithState(list):
    """A list of batches that, like our loaders, has a position to checkpoint."""

    def state_dict(self) -> dict:
        return {'sample_in_epoch': 0}


def evaluations(tmp_path: Path, *callbacks: Callback, **overrides) -> list[int]:
    recorder = EvalBatches()
    trainer = make_trainer(tmp_path, batches(3), 4, [recorder, *callbacks], **overrides)
    trainer.eval_loaders = [('', batches(2, seed=7))]
    trainer.fit()
    return recorder.at


@pytest.mark.parametrize(('eval_interval', 'expected'), [
    ('10ba', [3]),  # longer than the run: only the evaluation at the end
    ('2ba', [2, 3]),  # the interval, then the end
    ('1ba', [1, 2, 3]),  # the interval already evaluated the last batch: not twice
    ('1ep', [3]),  # the epoch (3 batches) ends with the run
])
def test_training_ends_with_one_evaluation(tmp_path, eval_interval, expected):
    assert evaluations(tmp_path, max_duration='3ba', eval_interval=eval_interval) == expected


def test_eval_first_and_the_end(tmp_path):
    assert evaluations(tmp_path, max_duration='3ba', eval_interval='10ba', eval_first=True) == [0, 3]


def test_a_stop_request_ends_without_evaluating(tmp_path):
    """A preempted (or diverged) run exits at once."""
    assert evaluations(tmp_path, StopAfterFirstBatch(), max_duration='3ba', eval_interval='10ba') == []


def test_every_saved_checkpoint_is_uploaded_once(tmp_path):
    uploads = Uploads()
    trainer = make_trainer(tmp_path, LoaderWithState(batches(3)), 4, max_duration='3ba', save_interval='2ba',
                           save_folder=str(tmp_path / 'checkpoints'), save_filename='ba{batch}')
    trainer.logger = MetricLogger([uploads], True)
    trainer.saver = CheckpointSaver(trainer.config, 't', 'config: {}')
    trainer.fit()
    assert [Path(path).name for path in uploads.paths] == ['ba2', 'ba3']  # at the interval, then at the end
    assert all((Path(path) / '.complete').is_file() for path in uploads.paths)  # complete when handed over
