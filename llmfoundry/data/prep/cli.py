"""`llmfoundry data-prep <command>`: llm-foundry's data-prep scripts, flag for flag.

    convert_dataset_hf    any `datasets` source -> out_root/<split>
    convert_dataset_json  JSON Lines files      -> out_root
    convert_text_to_mds   a folder of .txt      -> output_folder (parallel groups, restartable;
                                                   --concat_tokens and --tokenizer are required)
    convert_finetuning_dataset  prompt/response or chat data -> out_root/<split> (llm-foundry's finetuning MDS)
    inspect TRAIN_YAML    how the finetuning train_loader tokenises and masks its first examples

The first three take --executor ray [--ray-address ADDR] [--num-tasks N]: groups run as Ray tasks on this
machine or a cluster (restartable, one merged index.json; docs/DATA_PREP.md).

Dashes work too (convert-dataset-hf). Exit status: 0 done, 1 bad input/output, 2 bad flags, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from llmfoundry.data.errors import DataError, run_reporting_errors
from llmfoundry.storage import check_supported

# Commands with their own module and `main(argv)` (and their own flags and exit statuses).
OWN_MODULES = {
    'convert_finetuning_dataset': 'llmfoundry.data.prep.finetuning',
    'inspect': 'llmfoundry.data.finetuning.inspect',
}
COMMANDS = ('convert_dataset_hf', 'convert_dataset_json', 'convert_text_to_mds', *OWN_MODULES)
OUTPUT_HELP = 'local folder or object-storage URL (s3://, gs://, oci://, azure://, hf://, dbfs:/, ...)'


def _add_conversion_flags(parser: argparse.ArgumentParser, concat_required: bool = False) -> None:
    parser.add_argument('--compression', default=None, help='shard compression, e.g. zstd (default: none)')
    if concat_required:  # as in llm-foundry's convert_text_to_mds, which only writes packed token rows
        concat_help = 'required: pack tokens into rows of exactly N tokens'
        tokenizer_help = 'required: hub name or local folder'
    else:
        concat_help = 'pack tokens into rows of exactly N tokens; without it a text column is written'
        tokenizer_help = 'hub name or local folder (required with --concat_tokens)'
    parser.add_argument('--concat_tokens', type=int, required=concat_required, help=concat_help)
    parser.add_argument('--tokenizer', required=concat_required, help=tokenizer_help)
    parser.add_argument('--bos_text', default='', help='text tokenised and put before each document')
    parser.add_argument('--eos_text', default='', help='text tokenised and put after each document')
    parser.add_argument(
        '--no_wrap', action='store_true', help="drop a row's leftover tokens instead of carrying them to the next row"
    )


def _add_executor_flags(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        '--executor',
        choices=('local', 'ray'),
        default='local',
        help="local: processes of this machine; ray: Ray tasks on a cluster (pip install 'llmfoundry[ray]')",
    )
    parser.add_argument(
        '--ray-address',
        '--ray_address',
        dest='ray_address',
        default=None,
        help="with --executor ray: 'auto', HOST:PORT or ray://...; default: RAY_ADDRESS, else the "
        'cluster `ray start` started on this machine, else a new local one',
    )
    grouping = 'with --executor ray' if command == 'convert_text_to_mds' else 'converts in N restartable groups'
    parser.add_argument(
        '--num-tasks',
        '--num_tasks',
        dest='num_tasks',
        type=int,
        default=None,
        help=f'{grouping}: number of groups (the same N always gives the same output; default '
        "with Ray: the cluster's CPUs)",
    )
    if command != 'convert_text_to_mds':
        parser.add_argument('--reprocess', action='store_true', help='in groups: redo groups that are already complete')


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f'llmfoundry data-prep {command}')
    if command == 'convert_dataset_hf':
        parser.add_argument(
            '--dataset',
            required=True,
            help='hub name, local folder, or a builder (json, parquet, text) with --data_files',
        )
        parser.add_argument('--data_subset', default=None, help="the dataset's configuration name, e.g. 'en'")
        parser.add_argument(
            '--data_files',
            action='append',
            default=None,
            metavar='[SPLIT=]PATH',
            help='data files for a builder; repeatable (default split: train)',
        )
        parser.add_argument('--splits', nargs='+', default=['train'])
        parser.add_argument('--out_root', required=True, help=OUTPUT_HELP)
        parser.add_argument('--tokenizer_kwargs', default='{}', help='JSON object passed to from_pretrained')
        parser.add_argument('--num_workers', type=int, default=None, help='tokenising processes (default: 1)')
        _add_conversion_flags(parser)
    elif command == 'convert_dataset_json':
        parser.add_argument(
            '--path', required=True, help='a .jsonl file, a folder or object-storage prefix of them, or a local glob'
        )
        parser.add_argument('--out_root', required=True, help=OUTPUT_HELP)
        parser.add_argument('--split', default='train')
        _add_conversion_flags(parser)
    else:
        parser.add_argument(
            '--input_folder',
            required=True,
            help='folder or object-storage prefix (s3://...) of .txt files, one document each',
        )
        parser.add_argument('--output_folder', required=True, help=OUTPUT_HELP)
        parser.add_argument('--use_tokenizer_eos', action='store_true', help="use the tokenizer's EOS as --eos_text")
        parser.add_argument(
            '--processes',
            type=int,
            default=None,
            help='local parallel groups (default: the CPU count); the same value always gives the same output',
        )
        parser.add_argument('--reprocess', action='store_true', help='redo groups that are already complete')
        _add_conversion_flags(parser, concat_required=True)
    _add_executor_flags(parser, command)
    return parser


def _spec(args: argparse.Namespace, tokenizer_kwargs: dict | None = None):
    """Validate flags and the tokenizer up front, before anything is written."""
    from llmfoundry.data.prep.encoding import TokenizeSpec
    from llmfoundry.data.prep.pipeline import ConvertSpec

    if args.concat_tokens is None:
        if getattr(args, 'use_tokenizer_eos', False) or args.bos_text or args.eos_text:
            raise DataError('--bos_text/--eos_text/--use_tokenizer_eos need --concat_tokens')
        return ConvertSpec(compression=args.compression)
    if not args.tokenizer:
        raise DataError('--concat_tokens needs --tokenizer')
    tokenize = TokenizeSpec(args.tokenizer, tokenizer_kwargs or {}, args.bos_text, args.eos_text)
    try:
        tokenizer = tokenize.load()
    except (OSError, ValueError) as err:
        raise DataError(str(err)) from err
    if getattr(args, 'use_tokenizer_eos', False):
        if args.eos_text:
            raise DataError('--use_tokenizer_eos and --eos_text are exclusive')
        tokenize = TokenizeSpec(args.tokenizer, tokenizer_kwargs or {}, args.bos_text, tokenizer.eos_token)
    if not tokenize.bos_text and not tokenize.eos_text:
        print('warning: no --bos_text/--eos_text: packed documents run together with no separator', file=sys.stderr)
    return ConvertSpec(args.concat_tokens, tokenize, args.no_wrap, args.compression)


def _data_files(values: list[str] | None) -> dict[str, list[str]] | None:
    if not values:
        return None
    files: dict[str, list[str]] = {}
    for value in values:
        split, sep, path = value.partition('=')
        split, path = (split, path) if sep else ('train', value)
        files.setdefault(split, []).append(path)
    return files


def _grouping(command: str, args: argparse.Namespace):
    """(number of groups, executor) for a conversion in groups; None for json/hf's single dataset."""
    if args.num_tasks is not None and args.num_tasks < 1:
        raise DataError('--num-tasks must be at least 1')
    if args.executor == 'local':
        if args.ray_address is not None:
            raise DataError('--ray-address needs --executor ray')
        from llmfoundry.data.prep.local_executor import LocalExecutor

        if command == 'convert_text_to_mds':
            if args.num_tasks is not None:
                raise DataError('--num-tasks is for --executor ray; locally the number of groups is --processes')
            processes = (os.cpu_count() or 1) if args.processes is None else args.processes
            if processes < 1:
                raise DataError('--processes must be at least 1')
            return processes, LocalExecutor(processes)
        if args.num_tasks is None:
            return None
        return args.num_tasks, LocalExecutor(min(args.num_tasks, os.cpu_count() or 1))
    if getattr(args, 'processes', None) is not None:
        raise DataError('--processes is for --executor local; with Ray the number of groups is --num-tasks')
    try:
        from llmfoundry.data.prep.ray_executor import RayExecutor, cluster_cpus
    except ImportError as err:
        raise DataError(f"--executor ray needs Ray: pip install 'llmfoundry[ray]' ({err})") from err
    n = args.num_tasks if args.num_tasks is not None else cluster_cpus(args.ray_address)
    return n, RayExecutor(args.ray_address)


def _run(command: str, args: argparse.Namespace) -> None:
    from llmfoundry.data.prep.progress import Progress

    flag = 'output_folder' if command == 'convert_text_to_mds' else 'out_root'
    check_supported(getattr(args, flag), f'--{flag}')  # before the tokenizer or any input is read
    grouping = _grouping(command, args)

    if command == 'convert_dataset_hf':
        try:
            tokenizer_kwargs = json.loads(args.tokenizer_kwargs)
        except json.JSONDecodeError as err:
            raise DataError(f'--tokenizer_kwargs is not JSON: {err}') from err
        spec = _spec(args, tokenizer_kwargs)
        if grouping is not None:
            from llmfoundry.data.prep.dataset_hf import convert_hf_grouped

            results = convert_hf_grouped(
                args.dataset,
                args.data_subset,
                args.splits,
                args.out_root,
                spec,
                *grouping,
                _data_files(args.data_files),
                args.reprocess,
            )
            for split, (stats, skipped) in results.items():
                print(stats.summary(f'{args.out_root.rstrip("/")}/{split}') + _skipped_note(skipped))
            return
        from llmfoundry.data.prep.dataset_hf import convert_hf

        bars: dict[str, Progress] = {}

        def report(split, stats):
            if split not in bars:
                bars[split] = Progress(f'{command} {split}')
            bars[split].update(stats.documents, stats.tokens)

        results = convert_hf(
            args.dataset, args.data_subset, args.splits, args.out_root, spec, args.num_workers or 0,
            _data_files(args.data_files), report,
        )  # fmt: skip
        for split, stats in results.items():
            stats.seconds = bars[split].elapsed()
            bars[split].close()
            print(stats.summary(f'{args.out_root.rstrip("/")}/{split}'))
    elif command == 'convert_dataset_json':
        spec = _spec(args)
        if grouping is not None:
            from llmfoundry.data.prep.dataset_json import convert_json_grouped

            stats, skipped = convert_json_grouped(args.path, args.out_root, args.split, spec, *grouping, args.reprocess)
            print(stats.summary(args.out_root) + _skipped_note(skipped))
            return
        from llmfoundry.data.prep.dataset_json import convert_json

        progress = Progress(command)
        try:
            stats = convert_json(
                args.path, args.out_root, args.split, spec, lambda s: progress.update(s.documents, s.tokens)
            )
        finally:
            progress.close()
        stats.seconds = progress.elapsed()
        print(stats.summary(args.out_root))
    else:
        from llmfoundry.data.prep.text_to_mds import convert_text_to_mds

        spec = _spec(args)
        n_groups, executor = grouping
        stats, skipped = convert_text_to_mds(
            args.input_folder, args.output_folder, spec, n_groups, args.reprocess, executor
        )
        print(stats.summary(args.output_folder) + _skipped_note(skipped))


def _skipped_note(skipped: int) -> str:
    return f' ({skipped} groups were already complete)' if skipped else ''


def _usage() -> str:
    return 'usage: llmfoundry data-prep {' + ','.join(COMMANDS) + '} [flags...]\n' + (__doc__ or '')


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage())
        return 0
    command = argv[0].replace('-', '_')
    if command not in COMMANDS:
        print(f"llmfoundry data-prep: unknown command '{argv[0]}'\n{_usage()}", file=sys.stderr)
        return 2
    if command in OWN_MODULES:
        return int(importlib.import_module(OWN_MODULES[command]).main(argv[1:]) or 0)
    args = _parser(command).parse_args(argv[1:])
    return run_reporting_errors(f'llmfoundry data-prep {command}', lambda: _run(command, args))
