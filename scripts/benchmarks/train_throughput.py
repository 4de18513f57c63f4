"""Benchmark (not a test): steady-state training tokens/s of yamls/pretrain/mpt-tiny-cpu.yaml, 1 and 2 processes.

Prepares a tokenizer and an MDS corpus from the Python standard library's sources in a scratch folder, runs
`llmfoundry train` for --batches batches with each process count (--repeats times, interleaved, since a shared
machine is noisy), and reads from each run's metrics.jsonl the speed monitor's window throughput and the trainer's
step-time breakdown (`time/*`, seconds per batch, llmfoundry/train/step_timing.py), both averaged over the last half
of the run, past warm-up. The table shows the median run of each process count (the faster middle one of an
even count).

    python scripts/benchmarks/train_throughput.py [--batches 40] [--nprocs 1 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / 'yamls' / 'pretrain' / 'mpt-tiny-cpu.yaml'


def llmfoundry(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, '-m', 'llmfoundry.cli', *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def prepare(work: Path, env: dict[str, str]) -> tuple[Path, Path]:
    corpus = work / 'corpus'
    corpus.mkdir()
    for path in sorted(Path(sysconfig.get_paths()['stdlib']).glob('*.py'))[:150]:
        (corpus / f'{path.stem}.txt').write_text(path.read_text(encoding='utf-8'), encoding='utf-8')
    tokenizer, mds = work / 'tokenizer', work / 'mds'
    llmfoundry('tokenizer', 'train', '--input', str(corpus), '--vocab-size', '4096', '--out', str(tokenizer), env=env)
    llmfoundry('data-prep', 'convert_text_to_mds', '--input_folder', str(corpus), '--output_folder',
               str(mds / 'train'), '--concat_tokens', '256', '--tokenizer', str(tokenizer), '--eos_text',
               '<|endoftext|>', env=env)
    shutil.copytree(mds / 'train', mds / 'val')
    return tokenizer, mds


PHASES = ('data_wait', 'forward_backward', 'optimizer', 'communication', 'logging')


def run(nproc: int, batches: int, tokenizer: Path, mds: Path, work: Path, env: dict[str, str]) -> dict[str, float]:
    """tokens/s and the seconds per batch of each phase, averaged over the second half of the run."""
    folder = work / f'run-{nproc}'
    shutil.rmtree(folder, ignore_errors=True)
    args = ['train', str(TINY_YAML), f'variables.data_local={mds}', f'variables.tokenizer={tokenizer}',
            f'max_duration={batches}ba', 'eval_interval=100000ba', f'save_folder={folder}',
            'callbacks.speed_monitor.window_size=5', 'console_log_interval=5ba']
    if nproc > 1:
        args += ['--nproc', str(nproc)]
    llmfoundry(*args, env=env)
    records = [json.loads(line) for line in (folder / 'metrics.jsonl').read_text().splitlines()]
    late = [r for r in records if r['batch'] > batches // 2]
    result = {'tokens/s': statistics.mean(r['throughput/tokens_per_sec'] for r in late
                                          if r.get('throughput/tokens_per_sec'))}
    result.update({phase: statistics.mean(r[f'time/{phase}'] for r in late if f'time/{phase}' in r)
                   for phase in PHASES})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batches', type=int, default=40)
    parser.add_argument('--nprocs', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--repeats', type=int, default=1, help='runs per process count; the median is shown')
    args = parser.parse_args()
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        tokenizer, mds = prepare(work, env)
        runs: dict[int, list[dict[str, float]]] = {n: [] for n in args.nprocs}
        for _ in range(args.repeats):
            for nproc in args.nprocs:
                runs[nproc].append(run(nproc, args.batches, tokenizer, mds, work, env))
    results = {n: sorted(r, key=lambda x: x['tokens/s'])[len(r) // 2] for n, r in runs.items()}
    cpu = next((line.split(':', 1)[1].strip() for line in Path('/proc/cpuinfo').read_text().splitlines()
                if line.startswith('model name')), platform.processor())
    print(f'\nmachine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}')
    print('config: yamls/pretrain/mpt-tiny-cpu.yaml (d_model 128, 4 layers, seq 256, global batch 16, fp32)\n')
    every = '; '.join(f'{n}: ' + ', '.join(f"{r['tokens/s']:.0f}" for r in rs) for n, rs in runs.items())
    print(f'median of {args.repeats} run(s); every run, tokens/s: {every}')
    print('time/* columns: milliseconds per batch on rank 0 (llmfoundry/train/step_timing.py)\n')
    header = f"{'processes':>9} | {'tokens/s':>9} | {'vs first':>8} | " + ' | '.join(f'{p:>16}' for p in PHASES)
    print(header)
    print('-' * len(header))
    first = results[args.nprocs[0]]['tokens/s']
    for nproc, result in results.items():
        phases = ' | '.join(f'{result[p] * 1000:>16.1f}' for p in PHASES)
        print(f"{nproc:>9} | {result['tokens/s']:>9.0f} | {result['tokens/s'] / first:>7.2f}x | {phases}")


if __name__ == '__main__':
    main()
