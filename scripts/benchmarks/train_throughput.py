"""Benchmark (not a test): steady-state training tokens/s of yamls/pretrain/mpt-tiny-cpu.yaml, 1 and 2 processes.

Prepares a tokenizer and an MDS corpus from the Python standard library's sources in a scratch folder, runs
`llmfoundry train` for --batches batches with each process count (--repeats times, interleaved, since a shared
machine is noisy), and reads from each run's metrics.jsonl the speed monitor's window throughput and the trainer's
step-time breakdown (`time/*`, seconds per batch, llmfoundry/train/step_timing.py), both averaged over the last half
of the run, past warm-up. The table shows the median run of each process count (the faster middle one of an
even count).

The `bare` rows are what the cores can do at all: the same model's forward, backward and AdamW step on random tokens,
no trainer, no data, no communication; N processes run side by side, each with cores / N threads and its 1/N of the
global batch. Their ratio bounds what any N-process trainer can gain over one process on this machine.

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
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

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


def bare_worker(threads: int, microbatches: int, steps: int, barrier: Path, peers: int) -> None:
    """One bare process (see the module doc): prints its tokens/s, timed once all `peers` have warmed up."""
    from llmfoundry.models.builders import build_model
    from llmfoundry.train.host_memory import keep_freed_memory

    keep_freed_memory()  # as the trainer does on the CPU
    torch.set_num_threads(threads)
    config = OmegaConf.to_container(OmegaConf.load(TINY_YAML), resolve=True)
    torch.manual_seed(0)
    model = build_model(config['model'])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    shape = (config['device_train_microbatch_size'], config['max_seq_len'])
    tokens = torch.randint(config['model']['vocab_size'], shape)

    def step() -> None:
        for _ in range(microbatches):
            model(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    (barrier / str(os.getpid())).touch()
    while len(list(barrier.iterdir())) < peers:
        time.sleep(0.01)
    began = time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({'tokens/s': steps * microbatches * tokens.numel() / (time.perf_counter() - began)}))


def bare(nproc: int, steps: int, work: Path, env: dict[str, str]) -> float:
    """Summed tokens/s of `nproc` bare processes side by side."""
    config = OmegaConf.load(TINY_YAML)
    microbatches = config.global_train_batch_size // (config.device_train_microbatch_size * nproc)
    threads = max(1, len(os.sched_getaffinity(0)) // nproc)
    barrier = Path(tempfile.mkdtemp(dir=work))
    workers = [subprocess.Popen([sys.executable, __file__, '--bare-worker', str(threads), str(microbatches),
                                 str(steps), str(barrier), str(nproc)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True) for _ in range(nproc)]
    return sum(json.loads(worker.communicate()[0])['tokens/s'] for worker in workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batches', type=int, default=40)
    parser.add_argument('--nprocs', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--repeats', type=int, default=1, help='runs per process count; the median is shown')
    parser.add_argument('--bare-worker', nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_worker:
        threads, microbatches, steps, barrier, peers = args.bare_worker
        bare_worker(int(threads), int(microbatches), int(steps), Path(barrier), int(peers))
        return
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        tokenizer, mds = prepare(work, env)
        runs: dict[int, list[dict[str, float]]] = {n: [] for n in args.nprocs}
        bare_runs: dict[int, list[float]] = {n: [] for n in args.nprocs}
        for _ in range(args.repeats):
            for nproc in args.nprocs:
                runs[nproc].append(run(nproc, args.batches, tokenizer, mds, work, env))
                bare_runs[nproc].append(bare(nproc, args.batches // 2, work, env))
    results = {n: sorted(r, key=lambda x: x['tokens/s'])[len(r) // 2] for n, r in runs.items()}
    bare_results = {n: sorted(r)[len(r) // 2] for n, r in bare_runs.items()}
    cpu = next((line.split(':', 1)[1].strip() for line in Path('/proc/cpuinfo').read_text().splitlines()
                if line.startswith('model name')), platform.processor())
    print(f'\nmachine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}')
    print('config: yamls/pretrain/mpt-tiny-cpu.yaml (d_model 128, 4 layers, seq 256, global batch 16, fp32)\n')
    every = '; '.join(f'{n}: ' + ', '.join(f"{r['tokens/s']:.0f}" for r in rs) for n, rs in runs.items())
    every_bare = '; '.join(f'{n}: ' + ', '.join(f'{r:.0f}' for r in rs) for n, rs in bare_runs.items())
    print(f'median of {args.repeats} run(s); every run, tokens/s: {every}; bare: {every_bare}')
    print('time/* columns: milliseconds per batch on rank 0 (llmfoundry/train/step_timing.py)\n')
    header = f"{'processes':>9} | {'tokens/s':>9} | {'vs first':>8} | " + ' | '.join(f'{p:>16}' for p in PHASES)
    print(header)
    print('-' * len(header))
    first = results[args.nprocs[0]]['tokens/s']
    for nproc, result in results.items():
        phases = ' | '.join(f'{result[p] * 1000:>16.1f}' for p in PHASES)
        print(f"{nproc:>9} | {result['tokens/s']:>9.0f} | {result['tokens/s'] / first:>7.2f}x | {phases}")
    first_bare = bare_results[args.nprocs[0]]
    for nproc, tokens_per_s in bare_results.items():
        print(f"{f'{nproc} bare':>9} | {tokens_per_s:>9.0f} | {tokens_per_s / first_bare:>7.2f}x |")
    print_paired(args.nprocs, runs, bare_runs)


def print_paired(nprocs: list[int], runs: dict[int, list[dict[str, float]]], bare_runs: dict[int, list[float]]) -> None:
    """The speed-up of each process count over the first, per repeat: a repeat's runs are minutes apart, so their
    ratio is less exposed to a shared machine's drift than the ratio of medians; and the trainer's share of the
    bare rate."""
    print('\nper repeat (runs next to each other): speed-up over the first process count; trainer / bare')
    first = nprocs[0]
    for nproc in nprocs[1:]:
        trainer = [r['tokens/s'] / f['tokens/s'] for r, f in zip(runs[nproc], runs[first])]
        bare = [b / f for b, f in zip(bare_runs[nproc], bare_runs[first])]
        print(f'  {nproc} vs {first} processes: trainer {spread(trainer)}; bare {spread(bare)}')
    for nproc in nprocs:
        share = [r['tokens/s'] / b for r, b in zip(runs[nproc], bare_runs[nproc])]
        print(f'  {nproc} process(es): trainer / bare {spread(share)}')


def spread(values: list[float]) -> str:
    listed = ', '.join(f'{v:.2f}' for v in values)
    return f'median {statistics.median(values):.2f}x ({listed})'


if __name__ == '__main__':
    main()
