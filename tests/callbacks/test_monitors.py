"""lr_monitor, memory_monitor, runtime_estimator and optimizer_monitor."""

from __future__ import annotations

import math

import pytest
import torch
from callback_state import finish_batch, make_state
from torch import nn

from llmfoundry.callbacks.memory_monitor import process_memory
from llmfoundry.callbacks.optimizer_monitor import OptimizerMonitor
from llmfoundry.callbacks.runtime_estimator import RuntimeEstimator
from llmfoundry.registry import callbacks


def test_lr_monitor_names_each_group_after_the_optimizer_class(tmp_path, logger, recorder):
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    state = make_state(tmp_path, model)
    state.optimizer = torch.optim.AdamW([{'params': model[0].parameters(), 'lr': 0.1},
                                         {'params': model[1].parameters(), 'lr': 0.01}])
    finish_batch(state)
    callbacks.build('lr_monitor', {}, 'callbacks.lr_monitor').batch_end(state, logger)
    assert recorder.events == [({'lr-AdamW/group0': 0.1, 'lr-AdamW/group1': 0.01}, 1)]


def test_memory_monitor_reports_rss_on_cpu(tmp_path, logger, recorder):
    state = make_state(tmp_path)
    finish_batch(state)
    callbacks.build('memory_monitor', {}, 'callbacks.memory_monitor').batch_end(state, logger)
    metrics = recorder.merged()
    assert 0 < metrics['memory/rss_mem'] <= metrics['memory/peak_rss_mem'] < 1e4  # GB


def test_process_memory_parses_proc_status_in_gb(tmp_path):
    status = tmp_path / 'status'
    status.write_text('Name:\tpython\nVmHWM:\t  2000000 kB\nVmRSS:\t  1000000 kB\n')
    assert process_memory(status) == {'memory/peak_rss_mem': 2.048, 'memory/rss_mem': 1.024}
    assert process_memory(tmp_path / 'missing') == {}


def test_memory_monitor_reports_cuda_allocator_stats_in_gb(tmp_path, logger, recorder, monkeypatch):
    stats = {'allocated_bytes.all.current': 2e9, 'reserved_bytes.all.current': 3e9, 'allocated_bytes.all.peak': 2.5e9,
             'num_alloc_retries': 1}
    monkeypatch.setattr(torch.cuda, 'memory_stats', lambda device=None: stats)
    state = make_state(tmp_path, device='cuda:0')
    finish_batch(state)
    callbacks.build('memory_monitor', {}, 'callbacks.memory_monitor').batch_end(state, logger)
    metrics = recorder.merged()
    assert metrics['memory/allocated_mem'] == 2.0
    assert metrics['memory/reserved_mem'] == 3.0
    assert metrics['memory/peak_allocated_mem'] == 2.5
    assert metrics['memory/alloc_retries'] == 1.0
    assert 'memory/rss_mem' not in metrics


def test_runtime_estimator_extrapolates_after_the_skipped_batches(tmp_path, logger, recorder, clock):
    state = make_state(tmp_path, max_duration='10ba')
    estimator = RuntimeEstimator(skip_batches=1, time_unit='seconds')
    estimator.clock = clock
    estimator.fit_start(state, logger)
    for seconds in (30.0, 2.0, 2.0):  # the first batch is slow (compilation) and skipped
        clock.advance(seconds)
        finish_batch(state)
        estimator.batch_end(state, logger)
    assert [batch for _, batch in recorder.events] == [2, 3]
    assert recorder.events[-1][0]['time/remaining_estimate'] == pytest.approx(2.0 * 7)  # 2 s per batch, 7 left


def test_runtime_estimator_in_epochs_starts_once_an_epoch_length_is_known(tmp_path, logger, recorder, clock):
    state = make_state(tmp_path, max_duration='2ep')
    estimator = RuntimeEstimator(skip_batches=0, time_unit='minutes')
    estimator.clock = clock
    estimator.fit_start(state, logger)
    for epoch in range(2):
        for _ in range(5):
            clock.advance(60.0)
            finish_batch(state)
            estimator.batch_end(state, logger)
        state.timestamp = state.timestamp.after_epoch()
        estimator.epoch_end(state, logger)
        if epoch == 0:
            assert recorder.events == []
    estimates = [metrics['time/remaining_estimate'] for metrics, _ in recorder.events]
    assert estimates == pytest.approx([4.0, 3.0, 2.0, 1.0, 0.0])  # one minute per batch


def _linear_with_grads(tmp_path):
    model = nn.Linear(2, 1)
    state = make_state(tmp_path, model)
    model.weight.grad = torch.tensor([[3.0, 4.0]])
    model.bias.grad = torch.tensor([12.0])
    return state, model


def test_optimizer_monitor_logs_grad_norms_every_interval(tmp_path, logger, recorder):
    state, _ = _linear_with_grads(tmp_path)
    monitor = callbacks.build('optimizer_monitor', {'batch_log_interval': 2, 'log_optimizer_metrics': False},
                              'callbacks.optimizer_monitor')
    for _ in range(4):
        monitor.before_optimizer_step(state, logger)
        finish_batch(state)
        monitor.batch_end(state, logger)
    assert [batch for _, batch in recorder.events] == [2, 4]
    assert recorder.events[0][0] == pytest.approx({'l2_norm/grad/weight': 5.0, 'l2_norm/grad/bias': 12.0,
                                                   'l2_norm/grad/global': 13.0})


def test_optimizer_monitor_adds_param_and_moment_metrics(tmp_path, logger, recorder):
    state, model = _linear_with_grads(tmp_path)
    state.optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    state.optimizer.step()  # creates exp_avg = (1 - beta1) * grad
    monitor = OptimizerMonitor(batch_log_interval=1)
    monitor.before_optimizer_step(state, logger)
    finish_batch(state)
    monitor.batch_end(state, logger)
    metrics = recorder.merged()
    assert metrics['l2_norm/param/weight'] == pytest.approx(torch.linalg.vector_norm(model.weight).item())
    assert metrics['l2_norm/moment/weight'] == pytest.approx(0.5)
    assert metrics['cosine/moment_grad/weight'] == pytest.approx(1.0)
    assert math.isfinite(metrics['l2_norm/grad/global'])
