from __future__ import annotations

import pytest
import torch
from callback_state import finish_batch, make_state
from torch import nn

from llmfoundry.callbacks.peak_flops import peak_flops
from llmfoundry.callbacks.speed_monitor import SpeedMonitor
from llmfoundry.config.validation import ConfigError
from llmfoundry.models.accounting import flops_per_token
from llmfoundry.models.mpt.configuration_mpt import MPTConfig
from llmfoundry.registry import callbacks

TINY_MPT = MPTConfig(d_model=16, n_heads=2, n_layers=2, max_seq_len=8, vocab_size=64)


class ConfigOnly(nn.Linear):
    """Stands in for an MPT model: the speed monitor only reads `model.config`."""

    def __init__(self) -> None:
        super().__init__(3, 2)
        self.config = TINY_MPT


def run_batches(monitor, state, logger, clock, seconds: list[float], start: bool = True) -> None:
    """Batches of 8 samples and 64 tokens, taking `seconds` each on the fake clock."""
    if start:
        monitor.clock = clock
        monitor.fit_start(state, logger)
    for duration in seconds:
        clock.advance(duration)
        finish_batch(state, samples=8, tokens=64)
        monitor.batch_end(state, logger)


def test_rates_over_the_window_and_per_device(tmp_path, logger, recorder, clock):
    state = make_state(tmp_path, world_size=2)
    monitor = callbacks.build('speed_monitor', {'window_size': 2, 'time_unit': 'seconds'}, 'callbacks.speed_monitor')
    run_batches(monitor, state, logger, clock, [1.0])
    assert not any(k.startswith('throughput/') for k in recorder.events[-1][0])  # window not yet full
    run_batches(monitor, state, logger, clock, [2.0, 4.0], start=False)
    metrics = recorder.events[-1][0]
    assert metrics['throughput/batches_per_sec'] == pytest.approx(2 / 6)  # window = last two batches
    assert metrics['throughput/samples_per_sec'] == pytest.approx(16 / 6)
    assert metrics['throughput/tokens_per_sec'] == pytest.approx(128 / 6)
    assert metrics['throughput/device/tokens_per_sec'] == pytest.approx(64 / 6)
    assert metrics['throughput/device/batches_per_sec'] == pytest.approx(1 / 6)
    assert metrics['throughput/device/samples_per_sec'] == pytest.approx(8 / 6)
    assert metrics['wall_clock/train'] == pytest.approx(7.0)
    assert not any('flops' in k or 'mfu' in k for k in metrics)  # nn.Linear: FLOPs unknown


def test_evaluation_time_is_kept_out_of_throughput(tmp_path, logger, recorder, clock):
    state = make_state(tmp_path)
    monitor = SpeedMonitor(window_size=2, time_unit='minutes')
    run_batches(monitor, state, logger, clock, [3.0])
    clock.advance(60.0)
    monitor.eval_end(state, logger, {})
    run_batches(monitor, state, logger, clock, [3.0], start=False)
    metrics = recorder.events[-1][0]
    assert metrics['throughput/batches_per_sec'] == pytest.approx(2 / 6)
    assert metrics['wall_clock/val'] == pytest.approx(1.0)
    assert metrics['wall_clock/train'] == pytest.approx(0.1)
    assert metrics['wall_clock/total'] == pytest.approx(1.1)


def test_flops_from_the_mpt_config_and_no_mfu_on_cpu(tmp_path, logger, recorder, clock):
    state = make_state(tmp_path, ConfigOnly(), precision='amp_bf16')
    run_batches(SpeedMonitor(window_size=1), state, logger, clock, [2.0])
    metrics = recorder.events[-1][0]
    expected = 32 * flops_per_token(TINY_MPT, 8)  # 64 tokens in 2 s
    assert metrics['throughput/flops_per_sec'] == pytest.approx(expected)
    assert metrics['throughput/device/flops_per_sec'] == pytest.approx(expected)
    assert 'throughput/device/mfu' not in metrics


def test_mfu_on_a_known_gpu(tmp_path, logger, recorder, clock, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'NVIDIA H100 80GB HBM3')
    state = make_state(tmp_path, ConfigOnly(), precision='amp_bf16', device='cuda:0', world_size=4)
    run_batches(SpeedMonitor(window_size=1), state, logger, clock, [2.0])
    metrics = recorder.events[-1][0]
    device_flops = 32 * flops_per_token(TINY_MPT, 8) / 4
    assert metrics['throughput/device/mfu'] == pytest.approx(device_flops / 989e12)


def test_mfu_omitted_on_an_unknown_gpu_unless_the_peak_is_given(tmp_path, logger, recorder, clock, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'NVIDIA GeForce RTX 4090')
    state = make_state(tmp_path, ConfigOnly(), precision='amp_bf16', device='cuda:0')
    run_batches(SpeedMonitor(window_size=1), state, logger, clock, [2.0])
    assert 'throughput/device/mfu' not in recorder.events[-1][0]
    run_batches(SpeedMonitor(window_size=1, gpu_flops_available=1e15), state, logger, clock, [2.0])
    assert recorder.events[-1][0]['throughput/device/mfu'] == pytest.approx(32 * flops_per_token(TINY_MPT, 8) / 1e15)


@pytest.mark.parametrize(('name', 'precision', 'peak'), [
    ('NVIDIA A100-SXM4-80GB', 'amp_bf16', 312e12),
    ('NVIDIA A100-PCIE-40GB', 'amp_fp16', 312e12),
    ('NVIDIA H100 80GB HBM3', 'amp_bf16', 989e12),
    ('NVIDIA H100 80GB HBM3', 'amp_fp8', 1979e12),
    ('NVIDIA H100 PCIe', 'amp_bf16', 756e12),
    ('NVIDIA H200', 'amp_bf16', 989e12),
    ('NVIDIA B200', 'amp_bf16', 2250e12),
    ('NVIDIA B200', 'amp_fp8', 4500e12),
    ('NVIDIA H100 NVL', 'amp_bf16', None),
    ('NVIDIA H200 NVL', 'amp_bf16', None),
    ('NVIDIA GH200 480GB', 'amp_bf16', None),
    ('NVIDIA A100-SXM4-80GB', 'fp32', None),
    ('NVIDIA A100-SXM4-80GB', 'amp_fp8', None),
])
def test_peak_flops_table(name, precision, peak):
    assert peak_flops(name, precision) == peak


def test_bad_arguments():
    with pytest.raises(ConfigError, match='time_unit'):
        SpeedMonitor(time_unit='weeks')
    with pytest.raises(ConfigError, match="did you mean 'callbacks.speed_monitor.window_size'"):
        callbacks.build('speed_monitor', {'windowsize': 10}, 'callbacks.speed_monitor')
