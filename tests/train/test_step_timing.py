"""The step-time breakdown (`time/*`), train metrics computed only for logged batches, and per-rank CPU threads."""

from __future__ import annotations

import os
import time

import pytest
import torch
from ranks import collect_from_ranks
from test_trainer_step import batches, make_trainer

from llmfoundry.config.validation import ConfigError
from llmfoundry.interfaces import LoggerDestination, MetricLogger
from llmfoundry.train import step_timing
from llmfoundry.train.distributed import init_distributed, threads_per_rank
from llmfoundry.train.step_timing import PHASES, StepTimer

TIME_METRICS = {f'time/{phase}' for phase in PHASES}


class Records(LoggerDestination):
    def __init__(self) -> None:
        self.by_batch: dict[int, dict[str, float]] = {}

    def log_metrics(self, metrics, timestamp) -> None:
        self.by_batch.setdefault(timestamp.batch, {}).update(metrics)


def test_timer_reports_mean_seconds_per_batch_per_phase_and_starts_over(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(step_timing.time, 'perf_counter', lambda: now[0])
    timer = StepTimer(torch.device('cpu'))
    assert timer.metrics() == {}
    for forward_seconds in (0.5, 1.5):
        with timer.phase('data_wait'):
            now[0] += 0.25
        with timer.phase('forward_backward'):
            now[0] += forward_seconds
        timer.batch_done()
    assert timer.metrics() == {
        'time/data_wait': 0.25,
        'time/forward_backward': 1.0,
        'time/optimizer': 0.0,
        'time/communication': 0.0,
        'time/logging': 0.0,
    }
    with timer.phase('logging'):
        now[0] += 2.0
    timer.batch_done()
    assert timer.metrics()['time/logging'] == 2.0
    with pytest.raises(ValueError, match="unknown step phase 'backward'"), timer.phase('backward'):
        pass


class FakeEvent:
    """A CUDA event on a fake device clock: `record` stamps it; `reached` says whether the device got there."""

    clock = 0.0
    reached = True

    def __init__(self, enable_timing: bool) -> None:
        self.stamp = 0.0

    def record(self) -> None:
        self.stamp = FakeEvent.clock

    def query(self) -> bool:
        return FakeEvent.reached

    def elapsed_time(self, end: FakeEvent) -> float:
        return (end.stamp - self.stamp) * 1000  # milliseconds, as CUDA reports


def test_on_cuda_device_phases_are_read_from_events_without_waiting_for_them(monkeypatch):
    monkeypatch.setattr(step_timing.torch.cuda, 'Event', FakeEvent)
    monkeypatch.setattr(step_timing.time, 'perf_counter', lambda: 0.0)  # host phases take no time here
    timer = StepTimer(torch.device('cuda', 0))
    with timer.phase('optimizer'):
        FakeEvent.clock += 0.5
    timer.batch_done()
    FakeEvent.reached = False  # not reached yet: counted at the next read, never waited for
    assert timer.metrics()['time/optimizer'] == 0.0
    FakeEvent.reached = True
    timer.batch_done()
    assert timer.metrics()['time/optimizer'] == 0.5


def run(tmp_path, console_interval: str) -> tuple[dict[int, dict[str, float]], float]:
    records = Records()
    trainer = make_trainer(tmp_path, batches(4), 2, max_duration='4ba', console_log_interval=console_interval)
    trainer.logger = MetricLogger([records], True)
    started = time.perf_counter()
    trainer.fit()
    return records.by_batch, time.perf_counter() - started


def test_breakdown_is_logged_at_the_console_interval_and_fits_in_the_wall_time(tmp_path):
    every_batch, _ = run(tmp_path / 'every', '1ba')
    logged, wall = run(tmp_path / 'every-2', '2ba')
    assert sorted(logged) == [2, 4]
    accounted = 0.0
    for batch, metrics in logged.items():
        assert metrics.keys() >= TIME_METRICS, metrics.keys()
        assert all(metrics[name] >= 0 for name in TIME_METRICS), metrics
        assert metrics['time/forward_backward'] > 0, metrics
        accounted += 2 * sum(metrics[name] for name in TIME_METRICS)  # per-batch means over 2 batches
        # train metrics come from the logged batch alone, so computing them only then changes no value
        for name in (
            'loss/train/total',
            'metrics/train/LanguageCrossEntropy',
            'metrics/train/LanguagePerplexity',
            'metrics/train/TokenAccuracy',
        ):
            assert metrics[name] == every_batch[batch][name], (batch, name, metrics[name], every_batch[batch][name])
    assert accounted <= wall, (accounted, wall)


def test_threads_per_rank_shares_the_cpus_and_honours_omp_num_threads(monkeypatch):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    assert [threads_per_rank(ranks, cpus=4) for ranks in (1, 2, 3, 8)] == [4, 2, 1, 1]
    monkeypatch.setenv('OMP_NUM_THREADS', '3')
    assert threads_per_rank(2, cpus=4) == 3
    monkeypatch.setenv('OMP_NUM_THREADS', 'two')
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS='two' is invalid"):
        threads_per_rank(2)


def _report_threads(rank: int, world_size: int, results) -> None:
    if rank == 0:
        os.environ.pop('OMP_NUM_THREADS', None)
    else:  # an explicit setting wins
        os.environ['OMP_NUM_THREADS'] = '3'
    init_distributed(60)  # joins nothing (the group exists); sizes this rank's thread pools
    results[rank] = (
        torch.get_num_threads(),
        torch.get_num_interop_threads(),
        os.environ['OMP_NUM_THREADS'],
        len(os.sched_getaffinity(0)),
    )


@pytest.mark.slow
def test_each_rank_sets_its_own_thread_pools():
    reported = collect_from_ranks(_report_threads, 2)
    shared = max(1, reported[0][3] // 2)  # rank 0's CPUs shared out between the machine's 2 ranks
    assert reported == {0: (shared, shared, str(shared), reported[0][3]), 1: (3, 3, '3', reported[1][3])}, reported
