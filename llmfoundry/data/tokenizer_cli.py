"""`llmfoundry tokenizer train --input PATH... --vocab-size N --out DIR`."""

from __future__ import annotations

import argparse
import sys
import time

from llmfoundry.data.errors import DataError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='llmfoundry tokenizer', description='Tokenizer utilities.')
    sub = parser.add_subparsers(dest='command', required=True)
    train = sub.add_parser('train', help='train a byte-level BPE tokenizer on local text/JSONL files or folders')
    train.add_argument('--input', nargs='+', required=True, help='files or folders (.jsonl: one "text" per line)')
    train.add_argument('--vocab-size', type=int, required=True)
    train.add_argument('--out', required=True, help='output folder, loadable by AutoTokenizer.from_pretrained')
    train.add_argument('--min-frequency', type=int, default=2, help='minimum pair count for a merge')
    train.add_argument('--model-max-length', type=int, default=2048)
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from llmfoundry.data.tokenizer_train import train_tokenizer_folder

    start = time.perf_counter()
    try:
        vocab = train_tokenizer_folder(
            args.input, args.vocab_size, args.out, args.min_frequency, args.model_max_length
        )
    except DataError as err:
        print(f'llmfoundry tokenizer: error: {err}', file=sys.stderr)
        return 1
    print(f'trained a {vocab}-token byte-level BPE in {time.perf_counter() - start:.1f} s -> {args.out}')
    return 0
