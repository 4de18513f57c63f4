"""nan_monitor and loss_spike stop the run with a reason that says what happened."""

from __future__ import annotations

import pytest
from callback_state import finish_batch, make_state

from llmfoundry.callbacks.loss_spike import LossSpike
from llmfoundry.registry import callbacks


@pytest.mark.parametrize('loss', [float('nan'), float('inf')])
def test_nan_monitor_stops_on_a_non_finite_loss(tmp_path, logger, loss):
    state = make_state(tmp_path)
    monitor = callbacks.build('nan_monitor', {}, 'callbacks.nan_monitor')
    finish_batch(state, loss=2.0)
    monitor.after_train_batch(state, logger)
    assert state.stop_reason is None
    finish_batch(state, loss=loss)
    monitor.after_train_batch(state, logger)
    assert state.stop_reason.startswith(f'nan_monitor: the training loss is {loss} at batch 2')
    assert state.diverged  # an error exit, and this state never becomes `latest`


def run_losses(guard: LossSpike, state, logger, losses: list[float]) -> None:
    for loss in losses:
        finish_batch(state, loss=loss)
        guard.after_train_batch(state, logger)


def test_loss_spike_needs_patience_consecutive_spikes(tmp_path, logger):
    state = make_state(tmp_path)
    guard = callbacks.build('loss_spike', {'window_size': 3, 'threshold': 2.0, 'patience': 2}, 'callbacks.loss_spike')
    run_losses(guard, state, logger, [1.0, 1.0, 1.0, 5.0, 1.0, 5.0])  # spikes, but never two in a row
    assert state.stop_reason is None
    run_losses(guard, state, logger, [5.0])
    assert state.stop_reason.startswith('loss_spike: the training loss stayed above 2 x its running mean '
                                        '(1.0000 over 3 batches) for 2 consecutive batches, up to batch 7')
    assert state.diverged


def test_loss_spike_ignores_early_and_non_finite_losses(tmp_path, logger):
    state = make_state(tmp_path)
    guard = LossSpike(window_size=3, threshold=2.0, patience=1)
    run_losses(guard, state, logger, [10.0, 1.0, float('nan'), 1.0, 3.0])  # mean 4: 3.0 is no spike
    assert state.stop_reason is None
    run_losses(guard, state, logger, [0.5, 0.5, 2.9])  # window now (3, 0.5, 0.5): 2.9 > 2 x 4/3
    assert state.stop_reason is not None


def test_loss_spike_rejects_a_threshold_that_cannot_spike():
    with pytest.raises(ValueError, match='threshold > 1'):
        LossSpike(threshold=1.0)
