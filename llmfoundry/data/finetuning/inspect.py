"""`llmfoundry data-prep inspect TRAIN_YAML [key=value ...] [--num-examples N] [--jsonl OUT]`: how the train
loader's first examples are tokenised and masked, before packing. Loss-bearing tokens are shown [[in brackets]]
(green on a terminal); --jsonl writes {"input_ids": [...], "labels": [...]} per example. Torch, transformers and
omegaconf are imported once the flags are parsed, so --help answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from llmfoundry.config.validation import ConfigError
from llmfoundry.data.finetuning.formats import FinetuningDataError
from llmfoundry.data.labels import IGNORE_INDEX

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from llmfoundry.data.finetuning.masking import Row

PROG = 'llmfoundry data-prep inspect'
GREEN, RESET = '\033[32m', '\033[0m'


def render(row: Row, tokenizer: PreTrainedTokenizerBase, color: bool) -> str:
    """The example's text with each run of loss-bearing tokens marked."""
    input_ids, labels = row
    pieces, start = [], 0
    while start < len(input_ids):
        target = labels[start] != IGNORE_INDEX
        end = start
        while end < len(input_ids) and (labels[end] != IGNORE_INDEX) == target:
            end += 1
        text = tokenizer.decode(input_ids[start:end])
        pieces.append((f'{GREEN}{text}{RESET}' if color else f'[[{text}]]') if target else text)
        start = end
    return ''.join(pieces)


def first_rows(config: dict[str, Any], count: int) -> tuple[PreTrainedTokenizerBase, list[Row]]:
    """The tokenizer and the first `count` masked rows of the config's train_loader (unpacked, unshuffled)."""
    from llmfoundry.data.finetuning.loader import build_finetuning_dataloader
    from llmfoundry.data.tokenizers import build_tokenizer

    tokenizer_cfg = config.get('tokenizer') or {}
    if not tokenizer_cfg.get('name'):
        raise ConfigError('tokenizer.name is required')
    tokenizer = build_tokenizer(tokenizer_cfg['name'], tokenizer_cfg.get('kwargs'))
    loader_cfg = dict(config.get('train_loader') or {})
    if loader_cfg.get('name') != 'finetuning':
        raise ConfigError(f"train_loader.name is {loader_cfg.get('name')!r}; inspect reads finetuning loaders")
    dataset = {**loader_cfg['dataset'], 'shuffle': False, 'packing_ratio': None, 'max_leftover_bins_to_keep': None}
    loader = build_finetuning_dataloader({'name': 'finetuning', 'dataset': dataset}, tokenizer, 1)
    rows = []
    for index in range(min(count, len(loader.dataset))):
        rows.append(loader.dataset[index])
    return tokenizer, rows


def write(rows: list[Row], tokenizer: PreTrainedTokenizerBase, out: TextIO, color: bool) -> None:
    """Each row's header (tokens, tokens with loss) and its rendered text."""
    for index, row in enumerate(rows):
        targets = sum(label != IGNORE_INDEX for label in row[1])
        out.write(f'--- example {index}: {len(row[0])} tokens, {targets} with loss ---\n')
        out.write(render(row, tokenizer, color) + '\n')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    parser.add_argument('train_yaml')
    parser.add_argument('overrides', nargs='*', metavar='key=value', help='overrides, as `llmfoundry train` takes')
    parser.add_argument('--num-examples', type=int, default=5)
    parser.add_argument('--jsonl', default=None, help='write {"input_ids", "labels"} per example here')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from llmfoundry.config.loading import load_yaml

    try:
        config = load_yaml(args.train_yaml, args.overrides)
        tokenizer, rows = first_rows(config, args.num_examples)
    except (OSError, ConfigError, FinetuningDataError, ValueError) as err:
        print(f'{PROG}: error: {err}', file=sys.stderr)
        return 1
    write(rows, tokenizer, sys.stdout, sys.stdout.isatty())
    if args.jsonl:
        with open(args.jsonl, 'w', encoding='utf-8') as out:
            for input_ids, labels in rows:
                out.write(json.dumps({'input_ids': input_ids, 'labels': labels}) + '\n')
    return 0
