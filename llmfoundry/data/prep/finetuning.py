"""`llmfoundry data-prep convert_finetuning_dataset`: llm-foundry's finetuning converter, flag for flag.

Writes llm-foundry's finetuning MDS layout, out_root/<split>/index.json + shards. With --tokenizer each sample
is `turns` (json: [{input_ids: prompt ids, labels: response ids}, ...]) and examples that cannot train at
--max_seq_len under --target_prompts/--target_responses are dropped (counted in one warning); without it the
formatted text is written (`prompt`/`response` strings, or `messages` json). The finetuning loader reads either.
Each split is written atomically (llmfoundry.data.prep.output). Exit status: 0 done, 1 bad input, 2 bad flags.
Prompt/response data with a tokenizer.json tokenizer imports neither torch nor transformers (token ids from
llmfoundry.data.fast_tokenizer); chat data loads transformers' tokenizer for its chat template. `datasets` is
imported once the flags are parsed, so --help answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from llmfoundry import storage
from llmfoundry.data.errors import DataError, run_reporting_errors
from llmfoundry.data.finetuning.formats import (
    FinetuningDataError,
    chat_messages,
    example_type,
    prompt_response,
    resolve_preprocessor,
)
from llmfoundry.data.finetuning.masking import MaskPolicy, masked_row
from llmfoundry.data.finetuning.prep_tokenizer import PrepTokenizer
from llmfoundry.data.finetuning.sources import iter_turns
from llmfoundry.data.prep.hf_streaming import load_streaming

log = logging.getLogger(__name__)

PROG = 'llmfoundry data-prep convert_finetuning_dataset'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """llm-foundry's flags (comma-separated --splits and --data_files, JSON --tokenizer_kwargs)."""
    parser.add_argument('--dataset', required=True,
                        help='a `datasets` name or folder, or a builder (json, csv, parquet) with --data_files')
    parser.add_argument('--data_subset', default=None, help="the dataset's configuration name")
    parser.add_argument('--splits', default='train,validation', help='comma-separated splits')
    parser.add_argument('--preprocessor', default=None, help="a registered preprocessor or 'module:function'")
    parser.add_argument('--data_files', default='', help='comma-separated data files, one per split')
    parser.add_argument('--skip-preprocessing', '--skip_preprocessing', dest='skip_preprocessing',
                        action='store_true', help='the data already has prompt/response or messages columns')
    parser.add_argument('--out_root', required=True, help='local folder or object-storage URL')
    parser.add_argument('--local', default=None, help='also keep a local copy here when out_root is remote')
    parser.add_argument('--compression', default=None, help='shard compression, e.g. zstd (default: none)')
    parser.add_argument('--num_workers', type=int, default=None, help='accepted; conversion runs in one process')
    parser.add_argument('--tokenizer', default=None, help='tokenise (write `turns`); without it text is written')
    parser.add_argument('--tokenizer_kwargs', default=None, help='JSON object passed to from_pretrained')
    parser.add_argument('--max_seq_len', type=int, default=2048)
    parser.add_argument('--target_prompts', default='none', help="'none', 'all' or 'length>=N'")
    parser.add_argument('--target_responses', default='last', help="'last' or 'all'")
    parser.add_argument('--encoder_decoder', action='store_true', help='refused: encoder-decoder is not built')


def _preprocessor(args: argparse.Namespace):
    if args.skip_preprocessing:
        return None
    preprocess = resolve_preprocessor(args.preprocessor, args.dataset, '--preprocessor')
    if preprocess is None:
        raise DataError(f"--preprocessor is not set and no preprocessor is registered for '{args.dataset}'; set "
                        'one, or pass --skip-preprocessing if the data is already formatted')
    return preprocess


def _load_split(args: argparse.Namespace, split: str, data_file: str | None):
    try:
        return load_streaming(args.dataset, name=args.data_subset, split=split, data_files=data_file)
    except Exception as err:  # datasets raises many types
        raise DataError(f"could not load '{args.dataset}' split '{split}': {type(err).__name__}: {err}") from err


def _source(args: argparse.Namespace, split: str, data_file: str | None) -> str:
    return f"'{args.dataset}' split '{split}'" + (f' ({data_file})' if data_file else '')


def convert_split(
    args: argparse.Namespace,
    split: str,
    data_file: str | None,
    tokenizer: PrepTokenizer | None,
    policy: MaskPolicy,
    dest: str,
) -> tuple[int, int]:
    """Write one split to `dest`; (examples written, examples dropped)."""
    from llmfoundry.data.prep.output import MDSOutput

    preprocess = _preprocessor(args)
    source = _source(args, split, data_file)
    data = _load_split(args, split, data_file)
    first = next(iter(data), None)
    if first is None:
        raise FinetuningDataError(f'{source}: the dataset is empty')
    if tokenizer is not None:
        columns = {'turns': 'json'}
    else:
        try:
            kind = example_type(preprocess(dict(first)) if preprocess else dict(first))
        except (ValueError, KeyError, TypeError) as err:
            raise FinetuningDataError(f'{source} example 0: {err}') from err
        columns = {'messages': 'json'} if kind == 'chat' else {'prompt': 'str', 'response': 'str'}
    written = dropped = 0
    with MDSOutput(dest, columns, args.compression) as writer:
        if tokenizer is not None:
            for _, turns in iter_turns(data, preprocess, tokenizer, source):
                if masked_row(turns, policy, tokenizer.eos_token_id, args.max_seq_len) is None:
                    dropped += 1
                    continue
                writer.write({'turns': turns})
                written += 1
        else:
            chat = 'messages' in columns
            for index, raw in enumerate(data):
                try:
                    example = preprocess(dict(raw)) if preprocess else dict(raw)
                    if (example_type(example) == 'chat') != chat:
                        raise ValueError('every example of a split must have the format of the first')
                    writer.write({'messages': chat_messages(example)} if chat else dict(
                        zip(('prompt', 'response'), prompt_response(example))))
                except (ValueError, KeyError, TypeError) as err:
                    raise FinetuningDataError(f'{source} example {index}: {err}') from err
                written += 1
        if written == 0:
            raise FinetuningDataError(f'{source}: no usable examples ({dropped} dropped)')
    if dropped:
        log.warning('%s: dropped %d examples with no loss-bearing token within --max_seq_len=%d (empty prompt or '
                    'response, or a prompt that fills it)', source, dropped, args.max_seq_len)
    return written, dropped


def run(args: argparse.Namespace) -> None:
    if args.encoder_decoder:
        raise DataError('--encoder_decoder: encoder-decoder data is not built here (decoder-only only)')
    policy = MaskPolicy.from_config(args.target_prompts, args.target_responses, 'flags')
    splits = [s.strip() for s in args.splits.split(',') if s.strip()]
    data_files = [f.strip() for f in args.data_files.split(',') if f.strip()]
    if data_files and len(data_files) != len(splits):
        raise DataError(f'--data_files has {len(data_files)} files for {len(splits)} splits; give one per split')
    storage.check_supported(args.out_root, '--out_root')
    if args.num_workers not in (None, 0, 1):
        log.warning('--num_workers %s has no effect: conversion runs in one process', args.num_workers)
    tokenizer: PrepTokenizer | None = None
    if args.tokenizer:
        try:
            kwargs = json.loads(args.tokenizer_kwargs) if args.tokenizer_kwargs else {}
        except json.JSONDecodeError as err:
            raise DataError(f'--tokenizer_kwargs is not JSON: {err}') from err
        try:
            tokenizer = PrepTokenizer(args.tokenizer, {**kwargs, 'model_max_length': args.max_seq_len})
        except (OSError, ValueError) as err:
            raise DataError(str(err)) from err
    remote = storage.is_remote(args.out_root)
    if args.local and not remote:
        log.warning('--local has no effect: --out_root is already local')
    for index, split in enumerate(splits):
        data_file = data_files[index] if data_files else None
        dest = storage.join(args.out_root, split)
        if args.local and remote:  # write the local copy, then publish it
            local = storage.join(args.local, split)
            written, dropped = convert_split(args, split, data_file, tokenizer, policy, local)
            storage.upload_folder(local, dest, replace=False, last='index.json')
        else:
            written, dropped = convert_split(args, split, data_file, tokenizer, policy, dest)
        print(f'{dest}: {written} examples' + (f' ({dropped} dropped)' if dropped else ''))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_reporting_errors(PROG, lambda: run(args))
