"""llm-foundry's `profiler:` section: torch.profiler over a schedule of training batches.

Every rank traces its own ops (and CUDA kernels on a GPU) and writes one Chrome trace per cycle of the schedule,
named by `torch_prof_filename` ({rank}, {local_rank}, {world_size}, {run_name}, {epoch}, {batch}: the batch the
cycle ended at) in `torch_prof_folder` (a local folder; '{run_name}' as Composer resolves it, relative to the
working directory). Open a trace in chrome://tracing or https://ui.perfetto.dev. A trace is written under a
temporary name and renamed, so a file with the final name is always whole.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from torch.profiler import ProfilerActivity, profile, schedule

from llmfoundry.config.schema import ProfilerConfig
from llmfoundry.config.validation import ConfigError
from llmfoundry.interfaces import Callback, DistInfo, MetricLogger, TrainState

log = logging.getLogger(__name__)


def _names(template: str, key: str, **values: object) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as error:
        raise ConfigError(f'profiler.{key}={template!r} cannot be filled in ({error!r}); it may use {{rank}}, '
                          '{local_rank}, {world_size}, {run_name}, {epoch} and {batch}.') from error


class TorchProfiler(Callback):
    """Traces the batches the schedule picks; built by setup.py from `profiler:`, checked there on every rank."""

    def __init__(self, config: ProfilerConfig, run_name: str, dist: DistInfo, autoresume: bool = False) -> None:
        self.config, self.dist = config, dist
        self.names = dict(rank=dist.rank, local_rank=dist.local_rank, world_size=dist.world_size, run_name=run_name)
        self.folder = Path(_names(config.torch_prof_folder, 'torch_prof_folder', **self.names, epoch=0, batch=0))
        self.filename(0, 0)  # a bad template fails here, not after the first traced cycle
        # A restart of an autoresume run adds to its own traces (those of batches it redoes are replaced).
        guarded = not (config.torch_prof_overwrite or autoresume)
        if guarded and self.folder.is_dir() and any(self.folder.iterdir()):
            raise ConfigError(f'profiler.torch_prof_folder {self.folder} already holds files (an earlier run\'s '
                              'traces?): set profiler.torch_prof_overwrite: true, or point it at another folder.')
        if config.torch_prof_remote_file_name or config.torch_prof_memory_remote_file_name:
            log.warning('profiler: the remote file names are not used; traces stay in %s', self.folder)
        self.written: list[Path] = []
        self.profiler: profile | None = None
        self.state: TrainState | None = None

    def filename(self, epoch: int, batch: int) -> str:
        name = _names(self.config.torch_prof_filename, 'torch_prof_filename', **self.names, epoch=epoch, batch=batch)
        return name + '.gz' if self.config.torch_prof_use_gzip and not name.endswith('.gz') else name

    def fit_start(self, state: TrainState, logger: MetricLogger) -> None:
        self.state = state
        self.folder.mkdir(parents=True, exist_ok=True)
        when = self.config.schedule
        activities = [ProfilerActivity.CPU]
        if self.dist.device.type == 'cuda':
            activities.append(ProfilerActivity.CUDA)
        self.profiler = profile(
            activities=activities,
            schedule=schedule(skip_first=when.skip_first, wait=when.wait, warmup=when.warmup, active=when.active,
                              repeat=when.repeat),
            on_trace_ready=self._write, record_shapes=self.config.torch_prof_record_shapes,
            profile_memory=self.config.torch_prof_profile_memory, with_stack=self.config.torch_prof_with_stack,
            with_flops=self.config.torch_prof_with_flops,
        )
        self.profiler.start()

    def batch_end(self, state: TrainState, logger: MetricLogger) -> None:
        if self.profiler is None:
            return
        with warnings.catch_warnings():  # torch's notice that a new cycle drops the last one's events: each
            warnings.filterwarnings('ignore', message='.*Profiler clears events')  # cycle has its own trace
            self.profiler.step()

    def fit_end(self, state: TrainState, logger: MetricLogger) -> None:
        self.close(state, logger)

    def close(self, state: TrainState, logger: MetricLogger) -> None:
        """Also after a failed run: the trace of a cycle it ended inside is written, and the profiler does not
        go on recording whatever the process does next."""
        if self.profiler is not None:
            self.profiler.stop()
            self.profiler = None

    def _write(self, profiler: profile) -> None:
        timestamp = self.state.timestamp
        path = self.folder / self.filename(timestamp.epoch, timestamp.batch)
        partial = path.with_name(f'.{path.name}.partial{path.suffix}')  # same suffix: export gzips for .gz
        profiler.export_chrome_trace(str(partial))
        os.replace(partial, path)
        self.written.append(path)
        keep = self.config.torch_prof_num_traces_to_keep
        while keep > 0 and len(self.written) > keep:
            self.written.pop(0).unlink(missing_ok=True)
        log.info('profiler: rank %d wrote %s', self.dist.rank, path)


def build_profiler(config: ProfilerConfig | None, run_name: str, dist: DistInfo,
                   autoresume: bool = False) -> list[Callback]:
    """The profiler callback `profiler:` asks for (none when unset)."""
    return [] if config is None else [TorchProfiler(config, run_name, dist, autoresume)]

