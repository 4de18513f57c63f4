"""Data-prep startup: seconds from process start until conversion work starts (a benchmark, not a test).

    python scripts/benchmarks/data_prep_startup.py [--repeat 3]

Each row is a fresh interpreter, median of --repeat runs ("startup s"):
- `... --help`: the whole process (parse flags, print help, exit).
- `import path`: process start until the modules the command's work needs are imported (with the tokenizer
  loader for conversions), then `os._exit` so interpreter teardown is not counted.
- `(run, 8 docs)`: the whole command converting 8 small documents (a tokenizer.json tokenizer trained here,
  local output): startup plus milliseconds of conversion. convert_finetuning_dataset converts 8 prompt/response
  examples, as text (no --tokenizer) and tokenized.
- `tokenizer train (run, 1 MB)`: the whole command, startup = wall - the training time it reports.
"before" runs the same path plus the imports the code made before: transformers' tokenizer class for
`tokenizer train`; for the conversions mosaicml-streaming's MDSWriter (`streaming/__init__.py` imports torch
and transformers) and transformers' AutoTokenizer, which they imported until llmfoundry.data.mds_writer and
llmfoundry.data.fast_tokenizer replaced them (convert_finetuning_dataset: torch through its masking module and
datasets' streaming dataset, transformers through its tokenising modules). The `floor:` rows are those libraries
alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1',
       'TOKENIZERS_PARALLELISM': 'false'}  # fmt: skip
EOT = '<|endoftext|>'
OLD_CONVERSION_IMPORTS = 'from streaming import MDSWriter; from transformers import AutoTokenizer'

HELP = {
    'data-prep convert_text_to_mds --help': ['data-prep', 'convert_text_to_mds', '--help'],
    'data-prep convert_dataset_json --help': ['data-prep', 'convert_dataset_json', '--help'],
    'data-prep convert_dataset_hf --help': ['data-prep', 'convert_dataset_hf', '--help'],
    'tokenizer train --help': ['tokenizer', 'train', '--help'],
}
IMPORTS = {
    'convert_text_to_mds: import path': 'import llmfoundry.data.prep.text_to_mds, llmfoundry.data.fast_tokenizer',
    'convert_dataset_json: import path': 'import llmfoundry.data.prep.dataset_json, llmfoundry.data.fast_tokenizer',
    'convert_dataset_hf: import path': 'import llmfoundry.data.prep.dataset_hf, llmfoundry.data.fast_tokenizer',
    'tokenizer train: import path': 'import llmfoundry.data.tokenizer_train',
    'floor: import torch.distributed': 'import torch.distributed',
    'floor: from streaming import MDSWriter': 'from streaming import MDSWriter',
    'floor: from transformers import AutoTokenizer': 'from transformers import AutoTokenizer',
    'floor: import tokenizers': 'import tokenizers',
}
BEFORE = {  # the same path with the imports the code made before (for rows that changed)
    'convert_text_to_mds: import path': f'{IMPORTS["convert_text_to_mds: import path"]}; {OLD_CONVERSION_IMPORTS}',
    'convert_dataset_json: import path': f'{IMPORTS["convert_dataset_json: import path"]}; {OLD_CONVERSION_IMPORTS}',
    'convert_dataset_hf: import path': f'{IMPORTS["convert_dataset_hf: import path"]}; {OLD_CONVERSION_IMPORTS}',
    'tokenizer train: import path':
        'import llmfoundry.data.tokenizer_train; from transformers import PreTrainedTokenizerFast',
}  # fmt: skip


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=ENV, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def _import_seconds(statement: str) -> float:
    """Process start -> imports done (the child exits at once with os._exit: no teardown counted)."""
    return _wall([sys.executable, '-c', f'{statement}\nimport os; os._exit(0)'])


def _median(fn, repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def _cli(prefix: str) -> list[str]:
    return [sys.executable, '-c', f'{prefix}import sys; from llmfoundry.cli import main; sys.exit(main(sys.argv[1:]))']


def _tokenizer_train_run(corpus: Path, tmp: Path, repeat: int, before: bool) -> tuple[float, float]:
    """(wall, wall - reported training seconds) of `llmfoundry tokenizer train`; `before` also imports
    transformers' tokenizer class, as the command used to."""
    walls, startups = [], []
    for i in range(repeat):
        out = tmp / f'tok-{before}-{i}'
        argv = [*_cli('from transformers import PreTrainedTokenizerFast; ' if before else ''), 'tokenizer', 'train',
                '--input', str(corpus), '--vocab-size', '4096', '--out', str(out)]  # fmt: skip
        start = time.perf_counter()
        stdout = subprocess.run(argv, env=ENV, check=True, capture_output=True, text=True).stdout
        wall = time.perf_counter() - start
        walls.append(wall)
        startups.append(wall - float(re.search(r'in ([\d.]+) s', stdout).group(1)))
    return statistics.median(walls), statistics.median(startups)


def _conversions(tmp: Path, docs: list[str], tokenizer: str) -> dict[str, list[str]]:
    """name -> CLI argv converting `docs` (8 small documents); '{out}' is replaced per run."""
    (tmp / 'txt').mkdir()
    for i, doc in enumerate(docs):
        (tmp / 'txt' / f'{i}.txt').write_text(doc, encoding='utf-8')
    jsonl = tmp / 'docs.jsonl'
    jsonl.write_text(''.join(json.dumps({'text': d}) + '\n' for d in docs), encoding='utf-8')
    chat = tmp / 'prompts.jsonl'
    chat.write_text(''.join(json.dumps({'prompt': d[:200], 'response': d[200:400]}) + '\n' for d in docs))
    tokens = ['--concat_tokens', '64', '--tokenizer', tokenizer, '--eos_text', EOT, '--compression', 'zstd']
    return {
        'convert_text_to_mds (run, 8 docs)': [
            'data-prep', 'convert_text_to_mds', '--input_folder', str(tmp / 'txt'), '--output_folder', '{out}',
            '--processes', '1', *tokens],
        'convert_dataset_json (run, 8 docs)': [
            'data-prep', 'convert_dataset_json', '--path', str(jsonl), '--out_root', '{out}', *tokens],
        'convert_dataset_hf (run, 8 docs, json builder)': [
            'data-prep', 'convert_dataset_hf', '--dataset', 'json', '--data_files', f'train={jsonl}', '--out_root',
            '{out}', *tokens],
        'convert_finetuning_dataset (run, 8 docs, text)': [
            'data-prep', 'convert_finetuning_dataset', '--dataset', 'json', '--data_files', str(chat), '--splits',
            'train', '--skip-preprocessing', '--out_root', '{out}'],
        'convert_finetuning_dataset (run, 8 docs, tokenized)': [
            'data-prep', 'convert_finetuning_dataset', '--dataset', 'json', '--data_files', str(chat), '--splits',
            'train', '--skip-preprocessing', '--out_root', '{out}', '--tokenizer', tokenizer, '--max_seq_len', '256'],
    }  # fmt: skip


def _run_seconds(argv: list[str], tmp: Path, prefix: str, repeat: int) -> float:
    def once() -> float:
        out = tempfile.mkdtemp(dir=tmp, prefix='out-')
        os.rmdir(out)
        return _wall([*_cli(prefix), *(arg.replace('{out}', out) for arg in argv)])

    return _median(once, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    from llmfoundry.data.stdlib_corpus import stdlib_sources

    rows: list[tuple[str, float | None, float]] = []
    for name, argv in HELP.items():
        rows.append((name, None, _median(lambda a=argv: _wall([sys.executable, '-m', 'llmfoundry.cli', *a]),
                                         args.repeat)))  # fmt: skip
    for name, statement in IMPORTS.items():
        before = BEFORE.get(name)
        rows.append((name, _median(lambda s=before: _import_seconds(s), args.repeat) if before else None,
                     _median(lambda s=statement: _import_seconds(s), args.repeat)))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / 'corpus'
        corpus.mkdir()
        sources = stdlib_sources(1_000_000, 200_000)
        for path in sources:
            (corpus / f'{path.stem}.txt').write_text(path.read_text(encoding='utf-8'), encoding='utf-8')
        old_wall, old_startup = _tokenizer_train_run(corpus, tmp, args.repeat, before=True)
        new_wall, new_startup = _tokenizer_train_run(corpus, tmp, args.repeat, before=False)
        rows.append(('tokenizer train (run, 1 MB): startup', old_startup, new_startup))
        rows.append(('tokenizer train (run, 1 MB): wall', old_wall, new_wall))
        docs = [path.read_text(encoding='utf-8')[:3000] for path in sources[:8]]
        for name, argv in _conversions(tmp, docs, str(tmp / 'tok-False-0')).items():
            rows.append((name, _run_seconds(argv, tmp, OLD_CONVERSION_IMPORTS + '; ', args.repeat),
                         _run_seconds(argv, tmp, '', args.repeat)))  # fmt: skip

    machine = f'{platform.machine()} {platform.processor() or ""}'.strip()
    print(f'{machine}, {os.cpu_count()} CPUs, Python {platform.python_version()}, median of {args.repeat}')
    width = max(len(name) for name, _, _ in rows)
    print(f'{"command":<{width}} | startup s before | startup s after')
    print(f'{"-" * width}-|------------------|----------------')
    for name, before, after in rows:
        before_text = f'{before:.2f}' if before is not None else '-'
        print(f'{name:<{width}} | {before_text:>16} | {after:>15.2f}')


if __name__ == '__main__':
    main()
