"""Benchmark (not a test): steady-state training tokens/s of yamls/pretrain/mpt-tiny-cpu.yaml, 1 and 2 processes.

Prepares a tokenizer and an MDS corpus from the Python standard library's sources in a scratch folder, runs
`llmfoundry train` for --batches batches with each process count, and reads the speed monitor's window
throughput from the run's metrics.jsonl (the mean over the last half of the run, past warm-up).

    python scripts/benchmarks/train_throughput.py [--batches 40] [--nprocs 1 2]
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


def run(nproc: int, batches: int, tokenizer: Path, mds: Path, work: Path, env: dict[str, str]) -> float:
    folder = work / f'run-{nproc}'
    args = ['train', str(TINY_YAML), f'variables.data_local={mds}', f'variables.tokenizer={tokenizer}',
            f'max_duration={batches}ba', 'eval_interval=100000ba', f'save_folder={folder}',
            'callbacks.speed_monitor.window_size=5', 'console_log_interval=5ba']
    if nproc > 1:
        args += ['--nproc', str(nproc)]
    llmfoundry(*args, env=env)
    records = [json.loads(line) for line in (folder / 'metrics.jsonl').read_text().splitlines()]
    rates = [r['throughput/tokens_per_sec'] for r in records if r.get('throughput/tokens_per_sec')
             and r['batch'] > batches // 2]
    return statistics.mean(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batches', type=int, default=40)
    parser.add_argument('--nprocs', type=int, nargs='+', default=[1, 2])
    args = parser.parse_args()
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        tokenizer, mds = prepare(work, env)
        results = {n: run(n, args.batches, tokenizer, mds, work, env) for n in args.nprocs}
    cpu = next((line.split(':', 1)[1].strip() for line in Path('/proc/cpuinfo').read_text().splitlines()
                if line.startswith('model name')), platform.processor())
    print(f'\nmachine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}')
    print('config: yamls/pretrain/mpt-tiny-cpu.yaml (d_model 128, 4 layers, seq 256, global batch 16, fp32)\n')
    print(f"{'processes':>9} | {'tokens/s':>10} | {'vs 1 process':>12}")
    print(f"{'-' * 9}-+-{'-' * 10}-+-{'-' * 12}")
    for nproc, rate in results.items():
        print(f'{nproc:>9} | {rate:>10.0f} | {rate / results[args.nprocs[0]]:>11.2f}x')


if __name__ == '__main__':
    main()
