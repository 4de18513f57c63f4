"""Data prep on Ray vs the local converter, same input (a benchmark, not a test).

    python scripts/benchmarks/data_prep_ray.py [--corpus-mb 20] [--concat-tokens 2048] [--repeat 2]

Corpus and tokenizer as in data_prep_throughput.py (stdlib sources; a byte-level BPE trained here). Rows:
convert_text_to_mds locally with 1 and 2 processes, then with --executor ray on a local Ray cluster of 1 and of
2 CPUs (one worker process per CPU; 2 groups each time). "cold" is the first Ray run of a fresh cluster (it
starts the worker processes, which import torch and streaming); the best of --repeat warm runs counts. The
2-CPU Ray output must equal the 2-process local output byte for byte (checked).

Per-task overhead: the round trip of an empty Ray task; a one-file conversion (one group: plan, task, write,
merge, done marker) through Ray minus the same through the local executor in this process (a fixed cost per
job); and what each further one-file group adds (8 groups vs 1), on Ray and locally.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from data_prep_throughput import build_corpus, machine


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file() and p.name != '.conversion_done'}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--corpus-mb', type=float, default=20.0)
    parser.add_argument('--concat-tokens', type=int, default=2048)
    parser.add_argument('--repeat', type=int, default=2, help='warm runs per method; the best time counts')
    args = parser.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ['TOKENIZERS_PARALLELISM'] = 'false'  # one thread per worker: parallelism from processes/tasks
    os.environ.setdefault('RAY_AUTH_MODE', 'disabled')  # a throwaway local cluster: no token written to ~/.ray

    import ray

    from llmfoundry.data.prep.encoding import TokenizeSpec
    from llmfoundry.data.prep.local_executor import LocalExecutor
    from llmfoundry.data.prep.pipeline import ConvertSpec
    from llmfoundry.data.prep.ray_executor import RayExecutor
    from llmfoundry.data.prep.text_to_mds import convert_text_to_mds
    from llmfoundry.data.tokenizer_train import train_byte_level_bpe
    from llmfoundry.data.tokenizers import build_tokenizer

    work = Path(tempfile.mkdtemp(prefix='llmfoundry-bench-'))
    ray_tmp = tempfile.mkdtemp(prefix='ray', dir='/tmp')  # Ray's socket paths must stay short
    try:
        corpus, sample, tiny, tiny8 = work / 'corpus', work / 'sample', work / 'tiny', work / 'tiny8'
        for folder in (corpus, sample, tiny, tiny8):
            folder.mkdir()
        size = build_corpus(corpus, args.corpus_mb)
        build_corpus(sample, 2.0)
        tokenizer_dir = str(work / 'tokenizer')
        train_byte_level_bpe([sample], 8192, tokenizer_dir)
        tokenizer = build_tokenizer(tokenizer_dir)
        spec = ConvertSpec(args.concat_tokens, TokenizeSpec(tokenizer_dir, {}, '', tokenizer.eos_token))
        shutil.copy(sorted(corpus.glob('*.txt'))[0], tiny / 'one.txt')
        for i in range(8):
            shutil.copy(tiny / 'one.txt', tiny8 / f'{i}.txt')
        print(
            f'corpus: {len(list(corpus.glob("*.txt")))} documents, {size / 1e6:.1f} MB; rows of '
            f'{args.concat_tokens} tokens\nmachine: {machine()}\n'
        )

        runs = 0

        tiny_spec = ConvertSpec(64, spec.tokenize)

        def timed(source: Path, groups: int, executor) -> tuple[float, int, Path]:
            nonlocal runs
            runs += 1
            out = work / f'out-{runs}'
            start = time.perf_counter()
            job_spec = tiny_spec if source in (tiny, tiny8) else spec
            stats, _ = convert_text_to_mds(str(source), str(out), job_spec, groups, executor=executor)
            return time.perf_counter() - start, stats.tokens, out

        def best(source: Path, groups: int, executor) -> tuple[float, int, Path]:
            return min(timed(source, groups, executor) for _ in range(args.repeat))

        rows = []
        for processes in (1, 2):
            seconds, tokens, out = best(corpus, processes, LocalExecutor(processes))
            rows.append((f'local --processes {processes}', processes, None, seconds, tokens))
        local_2 = out
        local_tiny = best(tiny, 1, LocalExecutor(1))[0]
        local_marginal = (best(tiny8, 8, LocalExecutor(1))[0] - local_tiny) / 7

        overhead = {}
        for cpus in (1, 2):
            ray.init(
                num_cpus=cpus,
                include_dashboard=False,
                object_store_memory=100_000_000,
                _temp_dir=ray_tmp,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
            try:
                executor = RayExecutor()
                cold = timed(corpus, 2, executor)[0]
                seconds, tokens, out = best(corpus, 2, executor)
                rows.append((f'ray, {cpus} CPU{"s" if cpus > 1 else ""}, --num-tasks 2', cpus, cold, seconds, tokens))
                if cpus == 2:
                    assert tree(out) == tree(local_2), 'Ray output differs from the local converter'
                    noop = ray.remote(num_cpus=1)(lambda: None)
                    ray.get(noop.remote())
                    start, n = time.perf_counter(), 50
                    ray.get([noop.remote() for _ in range(n)])
                    overhead['empty task (50 in flight, 2 CPUs), per task'] = (time.perf_counter() - start) / n
                    start = time.perf_counter()
                    for _ in range(10):
                        ray.get(noop.remote())
                    overhead['empty task round trip, one at a time'] = (time.perf_counter() - start) / 10
                    ray_tiny = best(tiny, 1, executor)[0]
                    overhead['job of one one-file group, Ray minus local (per job)'] = ray_tiny - local_tiny
                    ray_marginal = (best(tiny8, 8, executor)[0] - ray_tiny) / 7
                    overhead['each further one-file group, Ray 2 CPUs (from 8 vs 1 groups)'] = ray_marginal
                    overhead['each further one-file group, local 1 process'] = local_marginal
            finally:
                ray.shutdown()

        base = rows[0][4] / rows[0][3]
        print(f'| {"method":<30} | CPUs | cold s | best s | tokens/s   | per CPU    | vs local 1 |')
        print(f'|{"-" * 32}|------|--------|--------|------------|------------|------------|')
        for name, cpus, cold, seconds, tokens in rows:
            rate = tokens / seconds
            cold_s = f'{cold:6.1f}' if cold is not None else '     -'
            print(
                f'| {name:<30} | {cpus:>4} | {cold_s} | {seconds:>6.2f} | {rate:>10,.0f} | {rate / cpus:>10,.0f} '
                f'| {rate / base:>9.2f}x |'
            )
        print(f'\ntokens: {rows[0][4]:,}; local single-group one-file job: {local_tiny * 1e3:.0f} ms')
        for name, seconds in overhead.items():
            print(f'{name}: {seconds * 1e3:.1f} ms')
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
