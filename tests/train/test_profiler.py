"""`profiler:` (Composer's Profiler keys): torch.profiler traces of the batches the schedule picks, per rank."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from test_scheduled_gc import FailAt
from test_trainer_step import batches, make_trainer

from llmfoundry.config.loading import load_train_config
from llmfoundry.config.schema import ProfilerConfig
from llmfoundry.config.validation import ConfigError, from_dict
from llmfoundry.interfaces import DistInfo
from llmfoundry.train.profiler import TorchProfiler

TINY_YAML = Path(__file__).resolve().parents[2] / 'yamls' / 'pretrain' / 'mpt-tiny-cpu.yaml'
CPU = DistInfo(0, 1, 0, torch.device('cpu'))


def profiler(folder: Path, **keys) -> TorchProfiler:
    config = from_dict(ProfilerConfig, {'torch_prof_folder': str(folder), **keys}, 'profiler')
    return TorchProfiler(config, 'run', CPU)


def steps_in(trace: dict) -> list[str]:
    return sorted({event['name'] for event in trace['traceEvents'] if event['name'].startswith('ProfilerStep#')})


def test_the_scheduled_batches_are_traced_once(tmp_path):
    callback = profiler(tmp_path / 'traces', schedule={'skip_first': 1, 'wait': 1, 'warmup': 1, 'active': 2})
    make_trainer(tmp_path, batches(7), microbatch=2, callbacks=[callback], max_duration='7ba').fit()
    # skip batch 1, wait batch 2, warm up on batch 3, trace batches 4 and 5: one trace, named by batch 5
    assert sorted(path.name for path in (tmp_path / 'traces').iterdir()) == ['rank0.5.pt.trace.json']
    trace = json.loads((tmp_path / 'traces' / 'rank0.5.pt.trace.json').read_text())
    assert steps_in(trace) == ['ProfilerStep#3', 'ProfilerStep#4']  # torch counts steps from 0
    ops = {event['name'] for event in trace['traceEvents']}
    assert {'aten::mm', 'Optimizer.step#DecoupledAdamW.step'} <= ops
    assert any(event['name'] == '[memory]' for event in trace['traceEvents'])  # torch_prof_profile_memory: true


def test_a_failed_run_stops_the_profiler_and_keeps_the_trace_it_was_in(tmp_path):
    callback = profiler(tmp_path / 'traces', schedule={'wait': 0, 'warmup': 0, 'active': 5})
    trainer = make_trainer(tmp_path, batches(3), microbatch=2, callbacks=[callback, FailAt(2)], max_duration='3ba')
    with pytest.raises(RuntimeError, match='callback failed at batch 2'):
        trainer.fit()
    assert not torch.autograd.profiler._is_profiler_enabled
    trace = json.loads((tmp_path / 'traces' / 'rank0.2.pt.trace.json').read_text())
    assert steps_in(trace) == ['ProfilerStep#0', 'ProfilerStep#1', 'ProfilerStep#2']  # #2: begun, then the error


def test_repeating_cycles_keep_the_newest_traces_gzipped(tmp_path):
    callback = profiler(tmp_path / 'traces', schedule={'warmup': 1, 'active': 1, 'repeat': 0},
                        torch_prof_use_gzip=True, torch_prof_num_traces_to_keep=2,
                        torch_prof_filename='{run_name}-r{rank}-of{world_size}-e{epoch}-b{batch}.json')
    make_trainer(tmp_path, batches(6), microbatch=2, callbacks=[callback], max_duration='6ba').fit()
    names = sorted(path.name for path in (tmp_path / 'traces').iterdir())
    assert names == ['run-r0-of1-e0-b4.json.gz', 'run-r0-of1-e0-b6.json.gz']  # b2 written, then removed
    with gzip.open(tmp_path / 'traces' / names[1], 'rt') as trace:
        assert steps_in(json.load(trace)) == ['ProfilerStep#5']


def test_a_folder_with_traces_is_not_overwritten_unless_asked(tmp_path):
    folder = tmp_path / 'traces'
    folder.mkdir()
    (folder / 'rank0.4.pt.trace.json').write_text('{}')
    with pytest.raises(ConfigError, match='already holds files.*torch_prof_overwrite: true'):
        profiler(folder, schedule={})
    profiler(folder, schedule={}, torch_prof_overwrite=True)
    config = from_dict(ProfilerConfig, {'torch_prof_folder': str(folder), 'schedule': {}}, 'profiler')
    TorchProfiler(config, 'run', CPU, autoresume=True)  # a restarted run adds to its own traces


def test_the_section_loads_from_yaml_and_bad_values_say_what_to_change(tmp_path):
    config, _ = load_train_config(TINY_YAML, ['profiler.schedule.active=2', 'profiler.torch_prof_record_shapes=true',
                                              'profiler.sys_prof_cpu=false'])
    assert config.profiler.schedule.active == 2 and config.profiler.schedule.warmup == 1  # Composer's defaults
    assert config.profiler.torch_prof_folder == '{run_name}/torch_traces'
    assert config.profiler.torch_prof_record_shapes and config.profiler.torch_prof_profile_memory
    assert load_train_config(TINY_YAML)[0].profiler is None
    with pytest.raises(ConfigError, match='profiler.schedule'):
        load_train_config(TINY_YAML, ['profiler.torch_prof_use_gzip=true'])
    with pytest.raises(ConfigError, match=r'profiler.schedule.active=0 must be >= 1'):
        load_train_config(TINY_YAML, ['profiler.schedule.active=0'])
    with pytest.raises(ConfigError, match='json_trace_handler is not supported'):
        load_train_config(TINY_YAML, ['profiler.schedule.active=1', 'profiler.json_trace_handler.folder=x'])
    with pytest.raises(ConfigError, match=r"torch_prof_filename='rank\{rank\}.\{step\}.json' cannot be filled in"):
        profiler(tmp_path, schedule={}, torch_prof_filename='rank{rank}.{step}.json')
    with pytest.raises(ConfigError, match='torch_prof_num_traces_to_keep=0 is invalid'):
        profiler(tmp_path, schedule={}, torch_prof_num_traces_to_keep=0)
