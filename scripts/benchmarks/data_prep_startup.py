"""Data-prep startup: seconds from process start until conversion work can start (a benchmark, not a test).

    python scripts/benchmarks/data_prep_startup.py [--repeat 3]

Each row is a fresh interpreter, median of --repeat runs:
- `... --help`: the whole process (parse flags, print help, exit).
- `import path`: process start until the modules the command's work needs are imported (and the
  tokenizer module for conversions), then `os._exit` so interpreter teardown is not counted.
- `tokenizer train (run)`: the whole command on ~1 MB of stdlib sources, with the training time the
  command reports; startup = wall - training.
"before" rows reproduce the imports the code made before this change (transformers' tokenizer class for
`tokenizer train`); the conversions have no before/after: torch and transformers come with
mosaicml-streaming's MDSWriter (`streaming/__init__.py` imports its dataloader -> torch, transformers; even
`streaming.base.format.mds.writer` needs `streaming.base.util` -> torch.distributed), so their floor is
the `floor:` rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}

HELP = {
    'data-prep convert_text_to_mds --help': ['data-prep', 'convert_text_to_mds', '--help'],
    'data-prep convert_dataset_json --help': ['data-prep', 'convert_dataset_json', '--help'],
    'data-prep convert_dataset_hf --help': ['data-prep', 'convert_dataset_hf', '--help'],
    'tokenizer train --help': ['tokenizer', 'train', '--help'],
}
IMPORTS = {
    'convert_text_to_mds: import path': 'import llmfoundry.data.prep.text_to_mds, llmfoundry.data.tokenizers',
    'convert_dataset_json: import path': 'import llmfoundry.data.prep.dataset_json, llmfoundry.data.tokenizers',
    'convert_dataset_hf: import path': 'import llmfoundry.data.prep.dataset_hf, llmfoundry.data.tokenizers',
    'tokenizer train: import path': 'import llmfoundry.data.tokenizer_train',
    'floor: import torch.distributed': 'import torch.distributed',
    'floor: from streaming import MDSWriter': 'from streaming import MDSWriter',
    'floor: from transformers import AutoTokenizer': 'from transformers import AutoTokenizer',
    'floor: import tokenizers': 'import tokenizers',
}
BEFORE = {  # the same path with the imports the code made before (for rows that changed)
    'tokenizer train: import path':
        'import llmfoundry.data.tokenizer_train; from transformers import PreTrainedTokenizerFast',
}


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=ENV, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def _import_seconds(statement: str) -> float:
    """Process start -> imports done (the child exits at once with os._exit: no teardown counted)."""
    return _wall([sys.executable, '-c', f'{statement}\nimport os; os._exit(0)'])


def _median(fn, repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def _tokenizer_train_run(repeat: int, before: bool) -> tuple[float, float]:
    """(wall, wall - reported training seconds) of `llmfoundry tokenizer train`; `before` also imports
    transformers' tokenizer class, as the command used to."""
    from llmfoundry.data.stdlib_corpus import stdlib_sources

    walls, startups = [], []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp, 'corpus')
        corpus.mkdir()
        for path in stdlib_sources(1_000_000, 200_000):
            (corpus / f'{path.stem}.txt').write_text(path.read_text(encoding='utf-8'), encoding='utf-8')
        prefix = 'from transformers import PreTrainedTokenizerFast; ' if before else ''
        code = f'{prefix}import sys; from llmfoundry.cli import main; sys.exit(main(sys.argv[1:]))'
        for i in range(repeat):
            argv = [sys.executable, '-c', code, 'tokenizer', 'train', '--input', str(corpus),
                    '--vocab-size', '4096', '--out', str(Path(tmp, f'tok{i}'))]
            start = time.perf_counter()
            out = subprocess.run(argv, env=ENV, check=True, capture_output=True, text=True).stdout
            wall = time.perf_counter() - start
            trained = float(re.search(r'in ([\d.]+) s', out).group(1))
            walls.append(wall)
            startups.append(wall - trained)
    return statistics.median(walls), statistics.median(startups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()

    rows: list[tuple[str, float | None, float]] = []
    for name, argv in HELP.items():
        rows.append((name, None, _median(lambda a=argv: _wall([sys.executable, '-m', 'llmfoundry.cli', *a]),
                                         args.repeat)))
    for name, statement in IMPORTS.items():
        before = BEFORE.get(name)
        rows.append((name, _median(lambda s=before: _import_seconds(s), args.repeat) if before else None,
                     _median(lambda s=statement: _import_seconds(s), args.repeat)))
    old_wall, old_startup = _tokenizer_train_run(args.repeat, before=True)
    new_wall, new_startup = _tokenizer_train_run(args.repeat, before=False)
    rows.append(('tokenizer train (run, 1 MB): startup', old_startup, new_startup))
    rows.append(('tokenizer train (run, 1 MB): wall', old_wall, new_wall))

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
