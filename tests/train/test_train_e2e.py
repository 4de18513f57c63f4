"""End to end on a real text+code corpus: the tiny YAML trains, and 2 ranks reach 1 rank's losses.

The MDS shards (`mds_dir`) come from tests/train/conftest.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ranks import free_port

from llmfoundry.train.entry import main as train

REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / 'yamls' / 'pretrain' / 'mpt-tiny-cpu.yaml'


MPT_SIZE = ['model.vocab_size=1024', 'model.d_model=64', 'model.n_layers=2']


def overrides(mds_dir: Path, tokenizer_dir: str, run_folder: Path, *extra: str) -> list[str]:
    return [
        f'variables.data_local={mds_dir}', f'variables.tokenizer={tokenizer_dir}', 'variables.max_seq_len=64',
        'max_duration=10ba',
        'global_train_batch_size=8', 'device_train_microbatch_size=2', 'console_log_interval=1ba',
        'train_loader.dataset.num_canonical_nodes=1', 'eval_loader.dataset.num_canonical_nodes=1',
        'eval_subset_num_batches=4', f'save_folder={run_folder}', *extra,
    ]


def read_metrics(run_folder: Path) -> list[dict]:
    return [json.loads(line) for line in (run_folder / 'metrics.jsonl').read_text().splitlines()]


def train_losses(records: list[dict]) -> dict[int, float]:
    return {r['batch']: r['loss/train/total'] for r in records if 'loss/train/total' in r}


@pytest.mark.slow
def test_tiny_yaml_trains_and_two_ranks_match_one(mds_dir, tokenizer_dir, tmp_path):
    single = tmp_path / 'single'
    assert train([str(TINY_YAML), *overrides(mds_dir, tokenizer_dir, single, *MPT_SIZE, 'eval_first=true',
                                             'eval_interval=10ba',
                                             'loggers.wandb={}', 'callbacks.speed_monitor.window_size=2')]) == 0
    records = read_metrics(single)
    logged = {name for record in records for name in record}
    assert {'throughput/tokens_per_sec', 'throughput/device/samples_per_sec', 'lr-DecoupledAdamW/group0',
            'memory/rss_mem', 'time/remaining_estimate', 'metrics/train/LanguagePerplexity'} <= logged
    assert 'throughput/device/mfu' not in logged  # no peak FLOPs known for a CPU: omitted, not guessed
    assert all(value is not None for record in records for value in record.values())  # finite (NaN -> null)
    assert list(single.glob('wandb/offline-run-*/run-*.wandb'))
    losses = train_losses(records)
    assert sorted(losses) == list(range(1, 11))
    evals = [r['metrics/eval/LanguageCrossEntropy'] for r in records if 'metrics/eval/LanguageCrossEntropy' in r]
    assert len(evals) == 2 and evals[1] < evals[0] - 0.5  # the eval loss falls visibly in 10 steps
    for record in (r for r in records if 'loss/train/total' in r):
        assert record['metrics/train/LanguageCrossEntropy'] == pytest.approx(record['loss/train/total'], rel=1e-9)
        assert 0 <= record['metrics/train/TokenAccuracy'] < 1
    assert records[-1]['tokens'] == 10 * 8 * 64 and records[-1]['samples'] == 80
    saved = yaml.safe_load((single / 'config.yaml').read_text())
    assert saved['model']['d_model'] == 64 and 'variables' not in saved

    double = tmp_path / 'double'
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    command = [sys.executable, '-m', 'llmfoundry.cli', 'train', str(TINY_YAML), '--nproc', '2',
               *overrides(mds_dir, tokenizer_dir, double, *MPT_SIZE, 'eval_interval=10ba')]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    two_rank = train_losses(read_metrics(double))
    for batch, loss in losses.items():
        assert two_rank[batch] == pytest.approx(loss, rel=1e-5), batch

    # Composer's launcher (`composer -n 2 scripts/train/train.py ...`) starts the ranks itself with these variables.
    composer = tmp_path / 'composer'
    port = free_port()
    ranks = [subprocess.Popen(
        [sys.executable, str(REPO / 'scripts' / 'train' / 'train.py'), str(TINY_YAML),
         *overrides(mds_dir, tokenizer_dir, composer, *MPT_SIZE, 'max_duration=3ba', 'eval_interval=3ba',
                    'profiler.schedule.active=1', f'profiler.torch_prof_folder={composer}/traces')],
        env={**env, 'RANK': str(rank), 'WORLD_SIZE': '2', 'LOCAL_RANK': str(rank), 'LOCAL_WORLD_SIZE': '2',
             'NODE_RANK': '0', 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    for process in ranks:
        _, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, stderr[-3000:]
    composer_losses = train_losses(read_metrics(composer))
    assert composer_losses == pytest.approx({b: losses[b] for b in (1, 2, 3)}, rel=1e-5)  # profiled, same numbers
    # profiler: each rank traced batch 2 (after one warm-up batch)
    traces = sorted(path.name for path in (composer / 'traces').iterdir())
    assert traces == ['rank0.2.pt.trace.json', 'rank1.2.pt.trace.json']
    assert '"aten::mm"' in (composer / 'traces' / 'rank1.2.pt.trace.json').read_text()


@pytest.mark.slow
def test_hf_causal_lm_trains_from_a_local_folder(mds_dir, tokenizer_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / 'llama'
    LlamaForCausalLM(LlamaConfig(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(folder)
    config = TINY_YAML.read_text().split('\nmodel:\n')
    rest = config[1][config[1].index('\ntokenizer:'):]
    hf_yaml = tmp_path / 'hf.yaml'
    hf_yaml.write_text(f'{config[0]}\nmodel:\n  name: hf_causal_lm\n  pretrained_model_name_or_path: {folder}\n{rest}')
    run = tmp_path / 'run'
    extra = ['model.config_overrides.attention_dropout=0.0', 'max_duration=3ba', 'eval_interval=3ba', 'callbacks=null']
    assert train([str(hf_yaml), *overrides(mds_dir, tokenizer_dir, run, *extra)]) == 0
    losses = train_losses(read_metrics(run))
    assert sorted(losses) == [1, 2, 3] and all(5 < loss < 8 for loss in losses.values())


def last_per_batch(run_folder: Path) -> dict[int, dict]:
    """metrics.jsonl after a resume holds the replayed batches twice: readers take the last entry per batch."""
    return {r['batch']: r for r in read_metrics(run_folder) if 'loss/train/total' in r}


@pytest.mark.slow
def test_killed_run_resumes_exactly_on_the_same_and_on_fewer_ranks(mds_dir, tokenizer_dir, tmp_path):
    def command(folder: Path, nproc: int, *extra: str) -> list[str]:
        launch = ['--nproc', str(nproc)] if nproc > 1 else []
        return [sys.executable, '-m', 'llmfoundry.cli', 'train', str(TINY_YAML), *launch,
                *overrides(mds_dir, tokenizer_dir, folder, *MPT_SIZE, 'max_duration=20ba', 'save_interval=10ba',
                           'eval_interval=100ba', 'autoresume=true', 'run_name=resume-test', *extra)]

    def run(folder: Path, nproc: int, crash_after: int | None = None, *extra: str) -> int:
        env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1'}
        if crash_after:
            env['LLMFOUNDRY_CRASH_AFTER_BATCH'] = str(crash_after)
        result = subprocess.run(command(folder, nproc, *extra), env=env, capture_output=True, text=True,
                                timeout=240)
        assert crash_after or result.returncode == 0, result.stderr[-3000:]
        return result.returncode

    straight = tmp_path / 'straight'
    run(straight, 1)
    expected = last_per_batch(straight)
    assert sorted(expected) == list(range(1, 21))
    assert (straight / 'latest').read_text().strip() == 'ep0-ba20'

    # Killed after batch 12 (the batch-10 checkpoint is the newest), then the same command again.
    resumed = tmp_path / 'resumed'
    assert run(resumed, 1, crash_after=12) != 0
    assert (resumed / 'latest').read_text().strip() == 'ep0-ba10'
    run(resumed, 1)
    again = last_per_batch(resumed)
    for batch in range(11, 21):  # bit for bit, and the same samples and tokens
        assert again[batch]['loss/train/total'] == expected[batch]['loss/train/total'], batch
        assert (again[batch]['samples'], again[batch]['tokens']) == (expected[batch]['samples'],
                                                                     expected[batch]['tokens'])

    # Two FSDP2 (FULL_SHARD) ranks killed after batch 4, resumed on one rank: the sharded checkpoint reshards.
    resharded, fsdp = tmp_path / 'resharded', 'fsdp_config.sharding_strategy=FULL_SHARD'
    assert run(resharded, 2, 12, fsdp) != 0
    assert sorted(p.name for p in (resharded / 'ep0-ba10').glob('*.distcp')) == ['__0_0.distcp', '__1_0.distcp']
    run(resharded, 1, None, fsdp)
    again = last_per_batch(resharded)
    for batch in range(1, 21):  # batches 1-10 from the sharded run, 11-20 after the resume
        assert again[batch]['loss/train/total'] == pytest.approx(expected[batch]['loss/train/total'], rel=1e-5)
        assert again[batch]['tokens'] == expected[batch]['tokens']


def wait_for_batch(run_folder: Path, batch: int, process: subprocess.Popen, timeout: float = 120) -> int:
    """Poll metrics.jsonl until `batch` batches were logged; returns the newest logged batch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, 'the run ended before it was signalled'
        logged = last_per_batch(run_folder) if (run_folder / 'metrics.jsonl').exists() else {}
        if logged and max(logged) >= batch:
            return max(logged)
        time.sleep(0.2)
    process.kill()
    pytest.fail(f'no batch {batch} within {timeout:.0f} s')


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_zero_then_resumes(mds_dir, tokenizer_dir, tmp_path):
    folder = tmp_path / 'preempted'
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}

    def start(max_duration: str) -> subprocess.Popen:
        command = [sys.executable, '-m', 'llmfoundry.cli', 'train', str(TINY_YAML), '--nproc', '2',
                   *overrides(mds_dir, tokenizer_dir, folder, *MPT_SIZE, f'max_duration={max_duration}',
                              'save_interval=100000ba', 'eval_interval=100000ba', 'autoresume=true',
                              'run_name=preempt-test', 'callbacks=null')]
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def latest() -> int:
        return int((folder / 'latest').read_text().strip().rsplit('-ba', 1)[1])

    # 1. SIGTERM to `llmfoundry train`, which forwards it to its ranks.
    launcher = start('100000ba')
    wait_for_batch(folder, 2, launcher)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=120) == 0, launcher.stderr.read()[-3000:]
    first_stop = latest()
    assert first_stop == max(last_per_batch(folder)) >= 2

    # 2. The same command resumes; SIGTERM to every rank at once (as SLURM does), not to the launcher.
    launcher = start('100000ba')
    wait_for_batch(folder, first_stop + 2, launcher)
    ranks = subprocess.run(['pgrep', '-P', str(launcher.pid)], capture_output=True, text=True).stdout.split()
    assert len(ranks) == 2
    for pid in ranks:
        os.kill(int(pid), signal.SIGTERM)
    assert launcher.wait(timeout=120) == 0, launcher.stderr.read()[-3000:]
    second_stop = latest()
    assert second_stop == max(last_per_batch(folder)) > first_stop + 1

    # 3. The same command runs to the end; run again after the end, it has nothing to do and exits 0.
    for _ in range(2):
        launcher = start(f'{second_stop + 2}ba')
        assert launcher.wait(timeout=180) == 0, launcher.stderr.read()[-3000:]
        assert latest() == second_stop + 2 and sorted(last_per_batch(folder)) == list(range(1, second_stop + 3))


@pytest.mark.slow
def test_a_stuck_rank_is_reported_instead_of_hanging(mds_dir, tokenizer_dir, tmp_path):
    command = [sys.executable, '-m', 'llmfoundry.cli', 'train', str(TINY_YAML), '--nproc', '2', '--grace', '5',
               *overrides(mds_dir, tokenizer_dir, tmp_path / 'stuck', *MPT_SIZE, 'dist_timeout=10',
                          'callbacks=null')]
    env = {**os.environ, 'LLMFOUNDRY_STALL_AFTER_BATCH': '1:2'}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert ('Hung collective: rank 0: a collective did not complete within dist_timeout=10 s during training '
            'batch 3; another rank is stuck or died') in result.stderr, result.stderr[-3000:]
