"""memory_monitor: device memory after every batch, in GB (1e9 bytes), with Composer's metric names.

On CUDA these are the caching allocator's statistics (what a run can actually use is bounded by
`reserved_mem`; `alloc_retries` > 0 means the allocator had to free its cache to satisfy a request,
a sign of fragmentation). On CPU there is no allocator to ask, so the process's resident set size is
read from /proc (Linux), without a psutil dependency; elsewhere nothing is logged.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmfoundry.interfaces import Callback, MetricLogger, TrainState

_GB = 1e9

# torch.cuda.memory_stats() key -> metric name under memory/
_CUDA_KEYS = {
    'allocated_bytes.all.current': 'allocated_mem',
    'active_bytes.all.current': 'active_mem',
    'inactive_split_bytes.all.current': 'inactive_mem',
    'reserved_bytes.all.current': 'reserved_mem',
    'allocated_bytes.all.peak': 'peak_allocated_mem',
    'active_bytes.all.peak': 'peak_active_mem',
    'reserved_bytes.all.peak': 'peak_reserved_mem',
}

# /proc/self/status field -> metric name; values are in kB
_PROC_KEYS = {'VmRSS': 'rss_mem', 'VmHWM': 'peak_rss_mem'}


def cuda_memory(device: torch.device) -> dict[str, float]:
    stats = torch.cuda.memory_stats(device)
    metrics = {f'memory/{name}': stats.get(key, 0) / _GB for key, name in _CUDA_KEYS.items()}
    metrics['memory/alloc_retries'] = float(stats.get('num_alloc_retries', 0))
    return metrics


def process_memory(status_file: Path = Path('/proc/self/status')) -> dict[str, float]:
    """Resident and peak resident memory of this process in GB; empty where /proc is not available."""
    try:
        lines = status_file.read_text().splitlines()
    except OSError:
        return {}
    metrics = {}
    for line in lines:
        field, _, value = line.partition(':')
        if field in _PROC_KEYS:
            metrics[f'memory/{_PROC_KEYS[field]}'] = int(value.split()[0]) * 1024 / _GB
    return metrics


class MemoryMonitor(Callback):
    def batch_end(self, state: TrainState, logger: MetricLogger) -> None:
        device = state.dist.device
        metrics = cuda_memory(device) if device.type == 'cuda' else process_memory()
        if metrics:
            logger.log(metrics, state.timestamp)
