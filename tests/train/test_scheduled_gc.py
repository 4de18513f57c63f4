"""scheduled_gc (llm-foundry's callback and keys): during training the collector runs only at its batches, evaluation
may collect as usual, and automatic collection comes back when the run ends, also when it fails."""

from __future__ import annotations

import gc

import pytest
from test_trainer_step import batches, make_trainer

from llmfoundry.callbacks.scheduled_gc import ScheduledGarbageCollector
from llmfoundry.interfaces import Callback
from llmfoundry.registry import callbacks


@pytest.fixture
def collections():
    """(generation, batch) of every collection while the test runs, with a threshold so low that automatic
    collection would run many times a batch; the collector's settings are restored afterwards."""
    seen: list[tuple[int, int]] = []
    batch = BatchTracker()

    def record(phase, info):
        if phase == 'start':
            seen.append((info['generation'], batch.current))

    threshold, enabled = gc.get_threshold(), gc.isenabled()
    gc.set_threshold(10)
    gc.enable()
    gc.callbacks.append(record)
    try:
        yield seen, batch
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*threshold)
        (gc.enable if enabled else gc.disable)()


class BatchTracker(Callback):
    """The batch in progress (0 before the first, -1 once the run is over), for the collection log."""

    def __init__(self) -> None:
        self.current = 0

    def batch_start(self, state, logger) -> None:
        self.current = state.timestamp.batch + 1

    def close(self, state, logger) -> None:
        self.current = -1


class FailAt(Callback):
    def __init__(self, batch: int) -> None:
        self.batch = batch

    def batch_end(self, state, logger) -> None:
        if state.timestamp.batch == self.batch:
            raise RuntimeError(f'callback failed at batch {self.batch}')


def test_collections_happen_only_at_the_scheduled_batches(tmp_path, collections):
    seen, tracker = collections
    make_trainer(tmp_path, batches(6), 4, [tracker], max_duration='6ba').fit()
    automatic = [generation for generation, batch in seen if 1 <= batch <= 6]
    assert len(automatic) > 6, 'the control run should collect automatically every batch'

    seen.clear()
    schedule = ScheduledGarbageCollector(batch_interval=4, gen_1_batch_interval=3)
    make_trainer(tmp_path, batches(6), 4, [tracker, schedule], max_duration='6ba').fit()
    in_run = [(generation, batch) for generation, batch in seen if batch >= 1]
    # full collections at fit_start (batch 0, not listed), batch 4 and fit_end (batch 6); generation 1 at batch 3 and 6
    assert in_run == [(1, 3), (2, 4), (1, 6), (2, 6)]
    assert gc.isenabled()


def test_automatic_collection_comes_back_when_the_run_fails(tmp_path, collections):
    _, tracker = collections
    schedule = callbacks.build('scheduled_gc', {'batch_interval': 1000, 'gen_1_batch_interval': 50},
                               'callbacks.scheduled_gc')
    trainer = make_trainer(tmp_path, batches(3), 4, [tracker, schedule, FailAt(2)])
    with pytest.raises(RuntimeError, match='callback failed at batch 2'):
        trainer.fit()
    assert gc.isenabled()

    gc.disable()  # a caller that had turned collection off keeps it off
    make_trainer(tmp_path, batches(3), 4, [schedule]).fit()
    assert not gc.isenabled()


@pytest.mark.parametrize('keep_disabled', [False, True])
def test_evaluation_collects_automatically_unless_kept_disabled(tmp_path, collections, keep_disabled):
    trainer = make_trainer(tmp_path, batches(1), 4)
    schedule = ScheduledGarbageCollector(batch_interval=10, eval_keep_disabled=keep_disabled)
    state, logger = trainer.state, trainer.logger
    schedule.fit_start(state, logger)
    assert not gc.isenabled()
    schedule.eval_start(state, logger)
    assert gc.isenabled() is not keep_disabled
    schedule.eval_end(state, logger, {})
    assert not gc.isenabled()
    schedule.close(state, logger)
    assert gc.isenabled()


@pytest.mark.parametrize('key', ['batch_interval', 'gen_1_batch_interval'])
@pytest.mark.parametrize('value', [0, -5, 2.5])
def test_an_interval_that_is_not_a_positive_batch_count_is_refused(key, value):
    kwargs = {'batch_interval': 100, key: value}
    with pytest.raises(ValueError, match=f'scheduled_gc.{key} must be a whole number of batches >= 1'):
        ScheduledGarbageCollector(**kwargs)
