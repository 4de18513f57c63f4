"""`llmfoundry convert to-hf SRC OUT` and `llmfoundry convert from-hf SRC OUT`."""

from __future__ import annotations

import argparse
import sys

from llmfoundry.config.cli_args import parse_or_exit_status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='llmfoundry convert', description=__doc__)
    sub = parser.add_subparsers(dest='direction', required=True)
    to_hf = sub.add_parser('to-hf', help='export as native MPT, native Llama, or remote code (chosen from the config); '
                           "an hf_causal_lm run's checkpoint as its own transformers class")
    to_hf.add_argument('src', help='a folder saved with save_pretrained (or any folder from-hf reads), or a training '
                       "checkpoint: a run folder (save_folder; its 'latest' checkpoint is used), one of our "
                       'checkpoint folders, a Composer DCP folder or a Composer .pt')
    to_hf.add_argument('out', help='the new Hugging Face folder (must not exist or be empty)')
    to_hf.add_argument('--dtype', choices=('float32', 'bfloat16'), default=None,
                       help="weights' dtype (default: as stored in SRC)")
    to_hf.add_argument('--max-seq-len', type=int, default=None,
                       help='raise max_seq_len in the exported config (native MPT builds ALiBi only this long)')
    to_hf.add_argument('--tokenizer', default=None, help="folder whose tokenizer files to include (default: SRC's)")
    to_hf.add_argument('--config', default=None,
                       help="training YAML whose model section rebuilds a checkpoint's model (needed for Composer's)")
    to_hf.add_argument('--remote-code', action='store_true', help='write remote code even where a native class fits')
    to_hf.add_argument('--adapter-only', action='store_true',
                       help="a LoRA run's checkpoint: write its adapter alone as a peft folder (default: the adapter "
                       'merged into the base weights, as a plain folder)')
    from_hf = sub.add_parser('from-hf', help='import a native MPT, mosaicml MPT, our remote-code or Llama folder')
    from_hf.add_argument('src', help='the Hugging Face folder')
    from_hf.add_argument('out', help='the new save_pretrained folder (must not exist or be empty)')
    return parser


def _export(model: object, args: argparse.Namespace) -> str:
    """Export `model` (an MPT, any other transformers model rebuilt from a checkpoint, or a folder); its format."""
    from llmfoundry.models.mpt import MPTForCausalLM
    from llmfoundry.models.peft_adapter import has_adapter, merged_model

    from .any_model import export_state_dict
    from .to_hf import export_to_hf

    if not isinstance(model, str) and has_adapter(model):
        if args.adapter_only:
            export_state_dict(model, model.state_dict(), args.out, dtype=args.dtype, tokenizer=args.tokenizer,
                              overwrite=False, peft_only=True)
            return 'peft adapter'
        model = merged_model(model, model.state_dict(), type(model))  # then exported like any trained model
    elif args.adapter_only:
        raise ValueError('--adapter-only needs the checkpoint of a run with model.peft_config.')
    if isinstance(model, (str, MPTForCausalLM)):
        return export_to_hf(model, args.out, dtype=args.dtype, max_seq_len=args.max_seq_len,
                            tokenizer=args.tokenizer, remote_code=args.remote_code)
    if args.max_seq_len is not None or args.remote_code:
        raise ValueError(f'--max-seq-len and --remote-code apply to MPT only; {type(model).__name__} is written '
                         'with its own config and code.')
    export_state_dict(model, model.state_dict(), args.out, dtype=args.dtype, tokenizer=args.tokenizer,
                      overwrite=False)
    return type(model).__name__


def main(argv: list[str]) -> int:
    args = parse_or_exit_status(_parser(), argv)
    if isinstance(args, int):  # --help or a usage error
        return args
    # Heavy imports only once the arguments are valid, so --help stays fast.
    from llmfoundry.train.checkpoint import CheckpointError, is_training_checkpoint

    from .from_checkpoint import model_from_checkpoint, resolve_run_folder
    from .from_hf import convert_from_hf

    try:
        if args.direction == 'to-hf':
            src = resolve_run_folder(args.src)
            if src != args.src:
                print(f'{args.src} is a run folder; exporting its latest checkpoint {src}')
            model = model_from_checkpoint(src, args.config) if is_training_checkpoint(src) else src
            fmt = _export(model, args)
            print(f'wrote {args.out} ({fmt})')
        else:
            kind = convert_from_hf(args.src, args.out)
            print(f'wrote {args.out} (imported from a {kind} folder)')
    except (FileExistsError, FileNotFoundError, ValueError, KeyError, CheckpointError) as exc:
        print(f'llmfoundry convert: error: {exc}', file=sys.stderr)
        return 1
    return 0
