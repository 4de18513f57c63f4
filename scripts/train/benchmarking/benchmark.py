"""Benchmark (not a test): training throughput, MFU and peak memory of an MPT YAML for N steps per variant.

Each variant (attn_impl x compiled or not) runs `llmfoundry train` in its own process on synthetic MDS data
(random token rows, so no corpus or hub tokenizer is needed) and reports the speed monitor's steady-state
window and the memory monitor's peak. llm-foundry's published single-node H100 rows (8 GPUs, bf16, seq 2048)
are printed beside ours for comparison.

    python scripts/train/benchmarking/benchmark.py --yaml yamls/pretrain/mpt-1b.yaml --seq-len 2048 \
        --steps 30 --device-batch 8 --impls torch,flex --compile both
    # a CPU smoke run:
    python scripts/train/benchmarking/benchmark.py --yaml yamls/pretrain/mpt-tiny-cpu.yaml --seq-len 128 \
        --steps 6 --device-batch 4 --impls torch --compile off --precision fp32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from streaming import MDSWriter

REPO = Path(__file__).resolve().parents[3]
PUBLISHED = {  # llm-foundry's table, 8x H100 80GB, bf16, seq 2048
    'mpt-1b': (45455, 41.82),
    'mpt-7b': (10643, 46.44),
}


def write_synthetic_mds(folder: Path, rows: int, seq_len: int, vocab: int) -> None:
    generator = np.random.default_rng(0)
    for split in ('train', 'val'):
        with MDSWriter(out=str(folder / split), columns={'tokens': 'ndarray:int32'}) as writer:
            for _ in range(rows):
                writer.write({'tokens': generator.integers(0, vocab, seq_len, dtype=np.int32)})


def make_tokenizer(folder: Path) -> None:
    """A small local tokenizer: the data is already tokens, the loader only needs pad and EOS ids."""
    corpus = folder / 'corpus.txt'
    corpus.write_text('def benchmark(): return 42\n' * 200)
    subprocess.run([sys.executable, '-m', 'llmfoundry.cli', 'tokenizer', 'train', '--input', str(corpus),
                    '--vocab-size', '300', '--out', str(folder / 'tokenizer')], check=True,
                   stdout=subprocess.DEVNULL)


def run_variant(args: argparse.Namespace, work: Path, impl: str, compiled: bool, vocab: int) -> dict[str, float]:
    run_name = f'bench-{impl}-{"compiled" if compiled else "eager"}'
    folder = work / 'runs' / run_name  # no save_folder: the run folder, without checkpoints to write
    overrides = [
        f'variables.data_local={work / "mds"}', f'variables.max_seq_len={args.seq_len}',
        f'tokenizer.name={work / "tokenizer"}', f'model.attn_config.attn_impl={impl}', f'model.vocab_size={vocab}',
        f'max_duration={args.steps}ba', 'eval_interval=100000ba', 'eval_first=false', f'run_name={run_name}',
        f'global_train_batch_size={args.device_batch * args.nproc}',
        f'device_train_microbatch_size={args.device_batch}',
        f'precision={args.precision}', 'train_loader.num_workers=0', 'console_log_interval=5ba',
        'callbacks={speed_monitor: {window_size: 5}, memory_monitor: {}}', 'loggers=null',
    ]
    if compiled:
        overrides.append('compile_config={}')
    command = [sys.executable, '-m', 'llmfoundry.cli', 'train', str(Path(args.yaml).resolve()), *overrides]
    if args.nproc > 1:
        command += ['--nproc', str(args.nproc)]
    subprocess.run(command, check=True, cwd=work, env={**os.environ, 'HF_HUB_OFFLINE': '1'},
                   stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in (folder / 'metrics.jsonl').read_text().splitlines()]
    last = {}
    for record in records:
        last.update({k: v for k, v in record.items() if v is not None})
    return {
        'tokens/s/device': last.get('throughput/device/tokens_per_sec', float('nan')),
        'mfu %': 100 * last.get('throughput/device/mfu', float('nan')),
        'peak GB': last.get('memory/peak_allocated_mem', last.get('memory/peak_rss_mem', float('nan'))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--yaml', default=str(REPO / 'yamls' / 'pretrain' / 'mpt-1b.yaml'))
    parser.add_argument('--seq-len', type=int, default=2048)
    parser.add_argument('--steps', type=int, default=30)
    parser.add_argument('--device-batch', type=int, default=8)
    parser.add_argument('--nproc', type=int, default=1)
    parser.add_argument('--impls', default='torch,flex')
    parser.add_argument('--compile', choices=('on', 'off', 'both'), default='both')
    parser.add_argument('--precision', default='amp_bf16')
    parser.add_argument('--vocab', type=int, default=50432)
    args = parser.parse_args()
    compiled = {'on': [True], 'off': [False], 'both': [False, True]}[args.compile]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        make_tokenizer(work)
        write_synthetic_mds(work / 'mds', (args.steps + 2) * args.device_batch * args.nproc, args.seq_len,
                            args.vocab)
        rows = [(impl, c, run_variant(args, work, impl, c, args.vocab)) for impl in args.impls.split(',')
                for c in compiled]
    name = Path(args.yaml).stem
    print(f'\n{name}, seq {args.seq_len}, device batch {args.device_batch}, {args.nproc} process(es), '
          f'{args.precision}, {args.steps} steps')
    print(f"| {'attn_impl':<9} | {'compiled':<8} | {'tokens/s/device':>15} | {'MFU %':>6} | {'peak GB':>7} |")
    print(f"|{'-' * 11}|{'-' * 10}|{'-' * 17}|{'-' * 8}|{'-' * 9}|")
    for impl, c, result in rows:
        print(f"| {impl:<9} | {str(c):<8} | {result['tokens/s/device']:>15,.0f} | {result['mfu %']:>6.2f} | "
              f"{result['peak GB']:>7.2f} |")
    if name in PUBLISHED:
        tokens, mfu = PUBLISHED[name]
        print(f'| llm-foundry (8x H100) | | {tokens:>15,} | {mfu:>6.2f} | |')


if __name__ == '__main__':
    main()
