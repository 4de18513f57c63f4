"""Data-prep throughput: convert_text_to_mds with 1 and 2 processes vs a naive loop (a benchmark, not a test).

    python scripts/benchmarks/data_prep_throughput.py [--corpus-mb 20] [--concat-tokens 2048] [--repeat 2]

Corpus: Python standard-library sources (code + English docstrings), one .txt document per module,
~20 MB. Tokenizer: a byte-level BPE trained here on the first 2 MB (or --tokenizer). The naive baseline
tokenises one document at a time through the tokenizer's __call__ and writes MDS rows in one process.
Prints wall seconds, CPU seconds (more CPU than wall = parallel) and tokens/s; the 1-process
conversion must write exactly the naive loop's rows (checked).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import tokenizers
from streaming import MDSWriter, StreamingDataset


def build_corpus(out: Path, megabytes: float) -> int:
    limit, total = int(megabytes * 1e6), 0
    for i, path in enumerate(sorted(Path(sysconfig.get_paths()['stdlib']).rglob('*.py'))):
        try:
            text = path.read_text(encoding='utf-8')
        except (UnicodeDecodeError, OSError):
            continue
        (out / f'{i:05d}_{path.stem}.txt').write_text(text, encoding='utf-8')
        total += len(text.encode())
        if total >= limit:
            break
    return total


def naive(files: list[Path], tokenizer, n: int, out: str) -> int:
    """One document at a time, one process: the loop a first script would write."""
    eos = [tokenizer.eos_token_id]
    buffer: list[int] = []
    tokens = 0
    with MDSWriter(out=out, columns={'tokens': 'ndarray:int32'}) as writer:
        for path in files:
            ids = tokenizer(path.read_text(encoding='utf-8'))['input_ids'] + eos
            tokens += len(ids)
            buffer += ids
            while len(buffer) >= n:
                writer.write({'tokens': np.asarray(buffer[:n], dtype=np.int32)})
                buffer = buffer[n:]
    return tokens


def rows(local: str) -> list[bytes]:
    dataset = StreamingDataset(local=local, batch_size=1)
    return [dataset[i]['tokens'].tobytes() for i in range(dataset.num_samples)]


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def machine() -> str:
    model = next((line.split(':', 1)[1].strip() for line in Path('/proc/cpuinfo').read_text().splitlines()
                  if line.startswith('model name')), platform.processor())
    load = ', '.join(f'{x:.1f}' for x in os.getloadavg())  # other work on the machine skews every number
    return (f'{model}, {os.cpu_count()} cores, load average {load}, Python {platform.python_version()}, '
            f'tokenizers {tokenizers.__version__}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--corpus-mb', type=float, default=20.0)
    parser.add_argument('--concat-tokens', type=int, default=2048)
    parser.add_argument('--tokenizer', default=None, help='tokenizer folder (default: train one on the corpus)')
    parser.add_argument('--repeat', type=int, default=2, help='runs per method; the best time counts')
    args = parser.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')

    from llmfoundry.data.prep.encoding import TokenizeSpec
    from llmfoundry.data.prep.pipeline import ConvertSpec
    from llmfoundry.data.prep.text_to_mds import convert_text_to_mds, plan_groups
    from llmfoundry.data.tokenizer_train import train_byte_level_bpe
    from llmfoundry.data.tokenizers import build_tokenizer

    work = Path(tempfile.mkdtemp(prefix='llmfoundry-bench-'))
    try:
        corpus = work / 'corpus'
        corpus.mkdir()
        size = build_corpus(corpus, args.corpus_mb)
        files = sorted(corpus.glob('*.txt'))
        tokenizer_dir = args.tokenizer
        if tokenizer_dir is None:
            sample = work / 'sample'
            sample.mkdir()
            build_corpus(sample, 2.0)
            tokenizer_dir = str(work / 'tokenizer')
            train_byte_level_bpe([sample], 8192, tokenizer_dir)
        tokenizer = build_tokenizer(tokenizer_dir)
        tokenizer.model_max_length = int(1e30)
        n = args.concat_tokens
        print(f'corpus: {len(files)} documents, {size / 1e6:.1f} MB; tokenizer: {len(tokenizer)} tokens; '
              f'rows of {n} tokens\nmachine: {machine()}\n')

        spec = ConvertSpec(n, TokenizeSpec(tokenizer_dir, {}, '', tokenizer.eos_token))

        def run_naive(out: Path) -> int:
            return naive(files, tokenizer, n, str(out))

        def run_converter(processes: int, tokenizer_threads: bool = True):
            def run(out: Path) -> int:
                # The Rust batch encoder uses a thread per core unless TOKENIZERS_PARALLELISM=false.
                os.environ['TOKENIZERS_PARALLELISM'] = 'true' if tokenizer_threads else 'false'
                try:
                    return convert_text_to_mds(str(corpus), str(out), spec, processes)[0].tokens
                finally:
                    os.environ.pop('TOKENIZERS_PARALLELISM')
            return run

        methods = [('naive loop (one doc at a time)', 1, run_naive),
                   ('convert_text_to_mds --processes 1, 1 thread', 1, run_converter(1, tokenizer_threads=False)),
                   ('convert_text_to_mds --processes 1', 1, run_converter(1)),
                   ('convert_text_to_mds --processes 2', 2, run_converter(2))]
        results = []
        for name, processes, run in methods:
            best = (float('inf'), 0.0)
            for attempt in range(args.repeat):  # best of N: the machine may be shared
                out = work / f'{processes}-{len(results)}-{attempt}'
                cpu, start = cpu_seconds(), time.perf_counter()
                tokens = run(out)
                best = min(best, (time.perf_counter() - start, cpu_seconds() - cpu))
            results.append((name, processes, *best, tokens))
        # One group = one token buffer: the 1-process conversion must hold the naive loop's rows exactly.
        assert rows(str(work / '1-2-0')) == rows(str(work / '1-0-0')), 'rows differ from the naive baseline'
        assert len(plan_groups([str(f) for f in files], 2)) == 2

        base = results[0][4] / results[0][2]
        print(f'| {"method":<44} | processes | seconds | CPU s | tokens/s   | vs naive |')
        print(f'|{"-" * 46}|-----------|---------|-------|------------|----------|')
        for name, processes, seconds, cpu, count in results:
            rate = count / seconds
            print(f'| {name:<44} | {processes:>9} | {seconds:>7.1f} | {cpu:>5.1f} | {rate:>10,.0f} | '
                  f'{rate / base:>7.2f}x |')
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
